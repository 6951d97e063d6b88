"""The report of FIND's main job (``tools/run_demo.py``): which metrics the results table shows,
their chance levels on the val split, the table itself, the loss plot and the overlay pictures.

Metric keys are detectron2's flattened evaluation keys ``<task>/<metric>`` (what the trainer's
EvalHook writes into ``metrics.json``): ``panoptic_seg/PQ`` (COCOPanopticEvaluator),
``segm/AP`` (COCOEvaluator), ``sem_seg/mIoU`` (SemSegEvaluator), ``grounding/cIoU``,
``interleave/cIoU`` and ``interleave/precision@0.5`` (FINDGroundingEvaluator; AP50 of FIND-Bench is
precision at IoU 0.5), ``retrieval/ir1``, ``retrieval/ir5``, ``interleave_retrieval/ir5``
(FINDRetrievalEvaluator) and ``interactive/miou@iter1``, ``interactive/noc@0.85``
(FINDInteractiveEvaluator; mIoU there is a fraction, shown here in percent).
"""

import json
import math
import os
from typing import Dict, List, Mapping, NamedTuple, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_utils

from ..data.files import rgb2id

__all__ = [
    "DEMO_METRICS",
    "DemoMetric",
    "flatten_results",
    "chance_levels",
    "metrics_table",
    "plot_losses",
    "write_overlays",
]


class DemoMetric(NamedTuple):
    key: str  # flattened detectron2 key
    label: str
    target: Optional[float]  # the main-job issue's target on the val split (None: no target)
    scale: float = 1.0  # shown value = scale * stored value
    higher_is_better: bool = True


DEMO_METRICS = (
    DemoMetric("panoptic_seg/PQ", "panoptic PQ", 40.0),
    DemoMetric("segm/AP", "instance mask AP", None),
    DemoMetric("sem_seg/mIoU", "semantic mIoU", None),
    DemoMetric("grounding/cIoU", "referring cIoU", 50.0),
    DemoMetric("interleave/cIoU", "interleave cIoU", 50.0),
    DemoMetric("interleave/precision@0.5", "interleave AP50", None),
    DemoMetric("retrieval/ir1", "retrieval IR@1", 50.0),
    DemoMetric("retrieval/ir5", "retrieval IR@5", None),
    DemoMetric("interleave_retrieval/ir5", "interleave IR@5", None),
    DemoMetric("interactive/miou@iter1", "interactive mIoU@1 click", 70.0, 100.0),
    DemoMetric("interactive/noc@0.85", "interactive NoC@85", None, 1.0, False),
)


def flatten_results(results: Mapping) -> Dict[str, float]:
    """``{task: {metric: value}}`` (``DefaultTrainer.test``) -> ``{"task/metric": value}``."""
    out = {}
    for task, metrics in results.items():
        if isinstance(metrics, Mapping):
            for name, value in metrics.items():
                out[f"{task}/{name}"] = float(value)
    return out


def _area_fractions(d) -> Dict[str, List[float]]:
    """Per-image area fractions of the val ground truth: segments, refs, entity phrases."""
    h, w = d.get("height"), d.get("width")
    areas = {s["id"]: s.get("area") for s in d.get("segments_info", [])}
    if h is None or w is None:
        with Image.open(d["file_name"]) as im:
            w, h = im.size
    hw = float(h * w)
    segs = [a / hw for a in areas.values() if a]
    refs = []
    for g in d.get("grounding_info", []):
        segm = g["segmentation"]
        rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm, list) else segm
        area = float(np.sum(mask_utils.area(rle)))
        refs.append(area / hw)
    phrases = [
        areas[p["annotation_id"]] / hw
        for e in d.get("entity_info", [])[:1]
        for p in e["phrases"]
        if areas.get(p["annotation_id"])
    ]
    return {"segments": segs, "refs": refs, "phrases": phrases}


def chance_levels(dataset_name: str) -> Dict[str, float]:
    """What a model that ignores its input gets on ``dataset_name`` (same units as the table).

    Retrieval: a random ranking of the N-image gallery, IR@k = 100 k / N. Referring and
    interleave cIoU, interactive mIoU: predicting the whole image for every query (cIoU = 100 *
    sum of target areas / sum of image areas; mIoU = mean area fraction). Panoptic PQ and mask AP:
    0 (no segment is recognised by chance). Semantic mIoU and NoC have no single chance level
    (they depend on the guessing rule / the click budget) and are left out."""
    dicts = DatasetCatalog.get(dataset_name)
    fr = {"segments": [], "refs": [], "phrases": []}
    for d in dicts:
        for k, v in _area_fractions(d).items():
            fr[k] += v
    n = len(dicts)

    def mean(xs):
        return 100.0 * float(np.mean(xs)) if xs else float("nan")

    out = {
        "panoptic_seg/PQ": 0.0,
        "segm/AP": 0.0,
        "grounding/cIoU": mean(fr["refs"]),
        "interleave/cIoU": mean(fr["phrases"]),
        "interleave/precision@0.5": 100.0
        * float(np.mean([f >= 0.5 for f in fr["phrases"]] or [0])),
        "retrieval/ir1": 100.0 / n,
        "retrieval/ir5": 100.0 * min(5, n) / n,
        "interleave_retrieval/ir5": 100.0 * min(5, n) / n,
        "interactive/miou@iter1": mean(fr["segments"]),
    }
    return out


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}"


def metrics_table(results: Mapping) -> str:
    """Markdown table: metric | untrained | trained | chance | target (``results`` holds the
    flattened ``untrained``, ``trained`` and ``chance`` dicts)."""
    rows = [
        "| metric (val) | untrained | trained | chance | target |",
        "|---|---|---|---|---|",
    ]
    for m in DEMO_METRICS:
        cells = []
        for part in ("untrained", "trained"):
            v = results.get(part, {}).get(m.key)
            cells.append(_fmt(None if v is None else v * m.scale))
        chance = results.get("chance", {}).get(m.key)
        target = (
            m.target
            if m.target is None
            else (">= " if m.higher_is_better else "<= ") + (_fmt(m.target))
        )
        label = m.label + ("" if m.higher_is_better else " (lower is better)")
        rows.append(f"| {label} | {' | '.join(cells)} | {_fmt(chance)} | {target or '-'} |")
    return "\n".join(rows)


def plot_losses(metrics_json: str, out_png: str) -> Optional[str]:
    """Plot ``total_loss`` and the final-layer losses of detectron2's ``metrics.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    with open(metrics_json) as f:
        for line in f:
            row = json.loads(line)
            if "total_loss" in row:
                rows.append(row)
    if not rows:
        return None
    keys = ["total_loss"] + sorted(
        k for k in rows[-1] if k.startswith("loss_") and not k.rsplit("_", 1)[-1].isdigit()
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    it = [r["iteration"] for r in rows]
    axes[0].plot(it, [r["total_loss"] for r in rows])
    axes[0].set(title="total loss", xlabel="iteration")
    for k in keys[1:]:
        axes[1].plot(it, [r.get(k, float("nan")) for r in rows], label=k[5:])
    axes[1].set(title="final-layer losses", xlabel="iteration", yscale="log")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _zoom(a: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour upsampling of the first two axes by ``k`` (small demo images are drawn
    at a readable size; labels keep detectron2's font size)."""
    return a if k == 1 else np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def write_overlays(
    cfg, weights: str, dataset_name: str, output_dir: str, num: int, min_side: int = 384
) -> List[str]:
    """Overlay PNGs of the first ``num`` images of ``dataset_name`` under ``output_dir/overlays``:
    panoptic prediction, the first referring sentence, a click at the innermost pixel of the
    largest thing, the entity sentence (text phrases). Images smaller than ``min_side`` are
    drawn enlarged by an integer factor."""
    from ..tasks.prompts import next_click
    from .predictor import FINDPredictor
    from .visualize import draw_masks, draw_panoptic, draw_prompts, save_png

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    predictor = FINDPredictor(cfg)
    meta = MetadataCatalog.get(dataset_name)
    out_dir = os.path.join(output_dir, "overlays")
    written = []
    for d in DatasetCatalog.get(dataset_name)[:num]:
        image = predictor.read(d["file_name"])
        k = max(1, min_side // min(image.shape[:2]))
        rgb = _zoom(predictor.rgb(image), k)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        pan, segments = predictor.panoptic(image)
        pan = _zoom(pan.cpu().numpy(), k)
        written.append(
            save_png(f"{out_dir}/{stem}_panoptic.png", draw_panoptic(rgb, pan, segments, meta))
        )
        refs = d.get("grounding_info", [])
        if refs:
            text = refs[0]["sentences"][0]
            masks = _zoom(predictor.referring(image, [text]).numpy().transpose(1, 2, 0), k)
            masks = masks.transpose(2, 0, 1)
            written.append(
                save_png(f"{out_dir}/{stem}_referring.png", draw_masks(rgb, masks, [text]))
            )
        things = [s for s in d.get("segments_info", []) if s.get("isthing")]
        if things:

            ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.uint8))
            big = max(things, key=lambda s: s.get("area", 0))
            gt = torch.from_numpy(ids == big["id"])
            _, click = next_click(torch.zeros_like(gt), gt)
            ys, xs = np.nonzero(click.numpy())
            point = (k * float(xs.mean()) + k / 2, k * float(ys.mean()) + k / 2)
            mask = predictor.interactive(image, click.numpy(), np.zeros_like(click.numpy()))
            drawn = draw_prompts(rgb, mask=_zoom(mask.numpy(), k), clicks=[point])
            written.append(save_png(f"{out_dir}/{stem}_interactive.png", drawn))
        entities = d.get("entity_info", [])
        if entities:
            e = entities[0]
            phrases = [
                {"start": p["start"], "end": p["end"], "visual": False} for p in e["phrases"]
            ]
            masks = predictor.interleave(image, e["sentence"], phrases).numpy()
            masks = _zoom(masks.transpose(1, 2, 0), k).transpose(2, 0, 1)
            labels = [p["phrase"] for p in e["phrases"]]
            written.append(
                save_png(f"{out_dir}/{stem}_interleave.png", draw_masks(rgb, masks, labels))
            )
    return written
