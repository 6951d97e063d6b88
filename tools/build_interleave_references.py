#!/usr/bin/env python
"""Build the cross-image visual references of FIND-Bench interleave retrieval (spec §5.3).

The official ``interleave_val2017.json`` (an entity file whose phrases carry a ``reference``)
was never released; this tool makes it with our model, the construction the paper describes:

1. every panoptic segment of every image is embedded by the model: the image goes through the
   vision model, and the segment's full mask is the visual prompt of one interleave entity
   (:func:`find_plugin.tasks.interleave_retrieval_visual.reference_entities`, the same embedding
   the visual-reference retrieval evaluation gives a visual entity);
2. for each phrase of the entity file (its segment ``annotation_id`` in its image), the
   reference is the segment of the SAME category in a DIFFERENT image (crowd segments excluded)
   with the largest cosine similarity: ``reference: {"image_id", "annotation_id", "prob"}``,
   ``prob`` = that cosine. A phrase with no candidate (its category appears in no other image)
   gets no ``reference`` and stays a text phrase in the evaluation.

Output: a copy of the entity file (``images``, ``annotations`` and any other top-level key kept)
with ``reference`` added to the phrases, plus ``"reference_info": {"config", "weights", "seed",
"phrases", "with_reference"}``; written atomically. The registered datasets
``find_coco_interleave_val2017{,_long}`` read ``coco/annotations/interleave_val2017{,_long}.json``.

    python tools/build_interleave_references.py --config-file configs/find_focalt.yaml \\
        --entity-json datasets/coco/annotations/entity_val2017.json \\
        --output datasets/coco/annotations/interleave_val2017.json \\
        MODEL.WEIGHTS find_focalt_llama_x640

``--panoptic-json`` / ``--panoptic-root`` / ``--image-root`` default to the COCO layout next to
the entity file (``panoptic_val2017.json``, ``panoptic_val2017/``, ``val2017/``). Images are
resized as in evaluation (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``); prompt points are drawn
from ``MODEL.FIND.TEST.SEED`` and the image id, so a run is reproducible.
"""

import argparse
import json
import os
import sys
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

__all__ = ["pick_references", "build_references", "main"]


class InputError(ValueError):
    """A malformed or missing input (the message names the file and the entry)."""


def pick_references(
    embeddings: torch.Tensor,
    image_ids: torch.Tensor,
    categories: torch.Tensor,
    candidate: torch.Tensor,
    queries: torch.Tensor,
) -> List[Optional[tuple]]:
    """For each query segment (row of ``queries`` [P] into the table), the most cosine-similar
    segment of the same category in another image among the ``candidate`` rows.

    Table: ``embeddings`` [S, D], ``image_ids`` [S], ``categories`` [S], ``candidate`` [S] bool.
    Returns per query ``(row, cosine)`` or None when there is no candidate."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    out: List[Optional[tuple]] = []
    for q in queries.tolist():
        ok = candidate & (categories == categories[q]) & (image_ids != image_ids[q])
        if not ok.any():
            out.append(None)
            continue
        sim = emb @ emb[q]
        sim = torch.where(ok, sim, torch.full_like(sim, -float("inf")))
        row = int(sim.argmax())
        out.append((row, float(sim[row])))
    return out


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise InputError(f"{what} not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{what} {path} is not valid JSON: {e}") from None


def _index_panoptic(panoptic: Mapping, path: str) -> Dict[int, dict]:
    for key in ("images", "annotations"):
        if not isinstance(panoptic.get(key), list):
            raise InputError(f"panoptic json {path} has no {key!r} list")
    files = {int(im["id"]): im for im in panoptic["images"]}
    out = {}
    for k, ann in enumerate(panoptic["annotations"]):
        if int(ann.get("image_id", -1)) not in files:
            raise InputError(f"panoptic json {path} annotations[{k}]: image_id not in images")
        out[int(ann["image_id"])] = {"image": files[int(ann["image_id"])], "annotation": ann}
    return out


def _check_phrases(entities: Mapping, path: str, panoptic: Mapping[int, dict]) -> List[tuple]:
    """``[(annotation index, phrase index, image_id, segment id)]``, validated."""
    if not isinstance(entities.get("annotations"), list):
        raise InputError(f"entity file {path} has no 'annotations' list")
    out = []
    for k, ann in enumerate(entities["annotations"]):
        where = f"entity file {path} annotations[{k}]"
        if "image_id" not in ann or not isinstance(ann.get("phrase"), list):
            raise InputError(f"{where} needs 'image_id' and a 'phrase' list")
        image_id = int(ann["image_id"])
        if image_id not in panoptic:
            raise InputError(f"{where}: image {image_id} is not in the panoptic json")
        ids = {int(s["id"]) for s in panoptic[image_id]["annotation"]["segments_info"]}
        for j, p in enumerate(ann["phrase"]):
            if "annotation_id" not in p:
                raise InputError(f"{where} phrase[{j}] has no 'annotation_id'")
            if int(p["annotation_id"]) not in ids:
                raise InputError(
                    f"{where} phrase[{j}] ({p.get('phrase')!r}): annotation_id "
                    f"{p['annotation_id']} is not a panoptic segment of image {image_id}"
                )
            out.append((k, j, image_id, int(p["annotation_id"])))
    return out


def _segment_table(model, panoptic, image_root, panoptic_root, cfg, progress=True) -> dict:
    """Embed every segment of every panoptic image (rows of the table, in image order)."""
    from detectron2.data import detection_utils as utils
    from tqdm import tqdm

    from find_plugin.d2.datasets.common import rgb2id
    from find_plugin.d2.mappers.augmentation import FixedResizeShortestEdge
    from find_plugin.d2.mappers.base import image_tensor
    from find_plugin.d2.mappers.registry import mapper_generator
    from find_plugin.tasks.base import pad_masks
    from find_plugin.tasks.interleave_retrieval_visual import reference_entities

    slot = model.encode_text(["[INTERACTIVE]"], "sentence")[0]
    real = slot.offsets[:, 1] > slot.offsets[:, 0]
    tokens = slot.features[real] if real.any() else slot.features
    resize = FixedResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    rows = {"embeddings": [], "image_ids": [], "segment_ids": [], "categories": [], "crowd": []}
    for image_id, entry in tqdm(panoptic.items(), desc="segments", disable=not progress):
        segments = entry["annotation"]["segments_info"]
        if not segments:
            continue
        image_path = os.path.join(image_root, entry["image"]["file_name"])
        png_path = os.path.join(panoptic_root, entry["annotation"]["file_name"])
        for path, what in ((image_path, "image"), (png_path, "panoptic PNG")):
            if not os.path.isfile(path):
                raise InputError(f"{what} of image {image_id} not found: {path}")
        image = utils.read_image(image_path, format=cfg.INPUT.FORMAT)
        pan = utils.read_image(png_path, "RGB")
        if pan.shape[:2] != image.shape[:2]:
            raise InputError(
                f"panoptic PNG {png_path} is {pan.shape[:2]}, its image {image_path} is "
                f"{image.shape[:2]}"
            )
        transform = resize.get_transform(image)
        ids = rgb2id(transform.apply_segmentation(pan))
        feats, mask_feats, padded = model.extract_one(image_tensor(transform.apply_image(image)))
        masks = torch.from_numpy(np.stack([ids == int(s["id"]) for s in segments]))
        generator = mapper_generator(cfg.MODEL.FIND.TEST.SEED, image_id)
        emb, _ = reference_entities(
            model.interface,
            feats,
            mask_feats,
            pad_masks(masks, padded),
            tokens,
            generator=generator,
        )
        rows["embeddings"].append(emb.float().cpu())
        for s in segments:
            rows["image_ids"].append(image_id)
            rows["segment_ids"].append(int(s["id"]))
            rows["categories"].append(int(s["category_id"]))
            rows["crowd"].append(bool(s.get("iscrowd", 0)))
    if not rows["embeddings"]:
        raise InputError("the panoptic json lists no segment")
    table = {k: torch.tensor(v) for k, v in rows.items() if k != "embeddings"}
    table["embeddings"] = torch.cat(rows["embeddings"])
    return table


def build_references(
    model,
    cfg,
    entity_json: str,
    panoptic_json: str,
    panoptic_root: str,
    image_root: str,
    *,
    progress: bool = True,
) -> dict:
    """The entity file content with ``reference`` on each phrase that has a candidate."""
    entities = _read_json(entity_json, "entity file")
    panoptic = _index_panoptic(_read_json(panoptic_json, "panoptic json"), panoptic_json)
    phrases = _check_phrases(entities, entity_json, panoptic)
    if not os.path.isdir(image_root):
        raise InputError(f"image folder not found: {image_root}")
    if not os.path.isdir(panoptic_root):
        raise InputError(f"panoptic PNG folder not found: {panoptic_root}")
    table = _segment_table(model, panoptic, image_root, panoptic_root, cfg, progress)
    row_of = {
        (i, s): r
        for r, (i, s) in enumerate(zip(table["image_ids"].tolist(), table["segment_ids"].tolist()))
    }
    queries = torch.tensor([row_of[(image_id, sid)] for _, _, image_id, sid in phrases])
    picks = pick_references(
        table["embeddings"], table["image_ids"], table["categories"], ~table["crowd"], queries
    )
    out = json.loads(json.dumps(entities))  # a deep copy of plain JSON
    found = 0
    for (k, j, _, _), pick in zip(phrases, picks):
        phrase = out["annotations"][k]["phrase"][j]
        phrase.pop("reference", None)
        if pick is None:
            continue
        row, prob = pick
        phrase["reference"] = {
            "image_id": int(table["image_ids"][row]),
            "annotation_id": int(table["segment_ids"][row]),
            "prob": round(prob, 6),
        }
        found += 1
    out["reference_info"] = {
        "config": cfg.get("_source_config", ""),
        "weights": cfg.MODEL.WEIGHTS,
        "seed": int(cfg.MODEL.FIND.TEST.SEED),
        "phrases": len(phrases),
        "with_reference": found,
    }
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, help="FIND detectron2 config (yaml)")
    p.add_argument("--entity-json", required=True, help="FIND-Bench entity file (input)")
    p.add_argument("--output", required=True, help="references file to write (entity format)")
    p.add_argument("--panoptic-json", help="default: <entity dir>/panoptic_<split>.json")
    p.add_argument("--panoptic-root", help="default: <coco>/panoptic_<split>/")
    p.add_argument("--image-root", help="default: <coco>/<split>/")
    p.add_argument("--split", default="val2017", help="COCO split of the defaults (val2017)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import find_plugin.d2  # noqa: F401  (registration)
    from find_plugin.checkpoint.format import atomic_write
    from find_plugin.d2 import FINDCheckpointer, add_find_config

    ann_dir = os.path.dirname(os.path.abspath(args.entity_json))
    coco = os.path.dirname(ann_dir)
    panoptic_json = args.panoptic_json or os.path.join(ann_dir, f"panoptic_{args.split}.json")
    panoptic_root = args.panoptic_root or os.path.join(coco, f"panoptic_{args.split}")
    image_root = args.image_root or os.path.join(coco, args.split)
    if not os.path.isfile(args.config_file):
        raise InputError(f"config file not found: {args.config_file}")
    cfg = get_cfg()
    add_find_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        FINDCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS)
    if model.encode_text is None:
        raise InputError(
            "the model has no language model: set MODEL.FIND.LANGUAGE.PATH or PACKAGE (the "
            "[INTERACTIVE] slot of a visual entity is encoded with it)"
        )
    with torch.no_grad():
        out = build_references(
            model,
            cfg,
            args.entity_json,
            panoptic_json,
            panoptic_root,
            image_root,
            progress=not args.no_progress,
        )
    out["reference_info"]["config"] = os.path.abspath(args.config_file)
    text = json.dumps(out)
    atomic_write(args.output, lambda f: f.write(text.encode()))
    info = out["reference_info"]
    print(
        f"wrote {args.output}: {info['with_reference']} of {info['phrases']} phrases have a "
        "reference"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
