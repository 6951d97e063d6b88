"""The COCO config's validation sets (those of configs/find_focalt.yaml's DATASETS.TEST), run by
mmengine's Runner on the demo files laid out as COCO: every set gives its own prefixed metrics and
only those; mmdet's RefSegMetric agrees with FIND's grounding metric; FINDDatasetMetrics hands
each set only its samples."""

import os
import pathlib

import numpy as np
import pytest
import torch

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))

SETS = {
    "coco_panoptic_val2017": (
        "coco_panoptic/PQ",
        "sem_seg/mIoU",
        "coco/segm_mAP",
        "interactive/noc@0.5",
        "retrieval/ir1",
    ),
    "refcocog_umd_val": ("grounding/cIoU", "grounding/mIoU", "refseg/cIoU", "refseg/mIoU"),
    "coco_entity_val2017": ("interleave/cIoU", "interleave_retrieval/ir1"),
    "coco_entity_val2017_long": ("interleave/cIoU", "interleave_retrieval/ir1"),
    "karpathy_test": ("retrieval/ir1", "retrieval/tr1"),
}


def coco_layout(demo_root: str, root: pathlib.Path) -> str:
    """``root`` in the COCO config's layout, made of links to the demo files (the demo's refs
    stand for RefCOCOg umd, its entity file for COCO-Entity and COCO-Entity-Long)."""
    demo = pathlib.Path(demo_root)
    (root / "coco" / "annotations").mkdir(parents=True)
    for p in (demo / "coco").iterdir():
        if p.name != "annotations":
            os.symlink(p, root / "coco" / p.name)
    ann = demo / "coco" / "annotations"
    links = {p.name: p for p in ann.iterdir()}
    links["entity_val2017.json"] = ann / "find_entity_val2017.json"
    links["entity_val2017_long.json"] = ann / "find_entity_val2017.json"
    for name, p in links.items():
        os.symlink(p, root / "coco" / "annotations" / name)
    (root / "refcocog").mkdir()
    os.symlink(demo / "refcoco" / "refs(unc).p", root / "refcocog" / "refs(umd).p")
    os.symlink(demo / "refcoco" / "instances.json", root / "refcocog" / "instances.json")
    return str(root) + "/"


def coco_val_cfg(demo_root, root, monkeypatch):
    """The demo model with the COCO config's validation sets and evaluator (parsed with
    ``$DETECTRON2_DATASETS`` = the linked layout), its pipelines on the demo's classes, language
    model and test size."""
    from mmengine.config import Config

    data_root = coco_layout(demo_root, root)
    monkeypatch.setenv("DETECTRON2_DATASETS", data_root.rstrip("/"))
    full = Config.fromfile(str(C.FULL_CONFIG))
    cfg = C.demo_cfg(demo_root, work_dir=str(root / "work"))
    cfg.test_dataloader = full.val_dataloader
    cfg.test_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    for ds in cfg.test_dataloader.dataset.datasets:
        assert ds.data_root == data_root
        if ds.type == "FINDCocoPanopticDataset":
            ds.metainfo = cfg.metainfo
        for t in ds.pipeline:
            if t["type"] == "Resize":
                t["scale"] = (256, 160)
            if t["type"] == "FINDSampleTasks":
                t.update(metainfo=cfg.metainfo, task_options=cfg.find_tasks)
                t["language"] = {k: v for k, v in cfg.language.items() if k != "cache_dir"}
    cfg.test_evaluator = full.val_evaluator
    # mmengine keeps one visualizer per name in the process: a Runner built later (e.g.
    # test_mmdet_runner's) would log into this one's work dir under the shared default name
    cfg.visualizer.name = "visualizer_coco_val_sets"
    cfg.test_evaluator.metrics[0].metrics[3].max_clicks = cfg.max_clicks
    return cfg


@pytest.fixture(scope="module")
def coco_val_metrics(demo_root, tmp_path_factory):
    from mmengine.runner import Runner

    monkeypatch = pytest.MonkeyPatch()
    try:
        cfg = coco_val_cfg(demo_root, tmp_path_factory.mktemp("coco_layout"), monkeypatch)
        runner = Runner.from_cfg(cfg)
        torch.manual_seed(0)
        metrics = runner.test()
    finally:
        monkeypatch.undo()
    return cfg, runner, metrics


def test_every_set_has_its_prefixed_metrics_and_only_those(coco_val_metrics):
    cfg, _, metrics = coco_val_metrics
    assert cfg.test_evaluator.dataset_prefixes == list(SETS)
    for prefix, keys in SETS.items():
        for key in keys:
            assert f"{prefix}/{key}" in metrics, (prefix, key, sorted(metrics))
    assert all(k.split("/")[0] in SETS for k in metrics), sorted(metrics)
    # a set runs only its own tasks: no grounding on the panoptic set, no generic on refcocog
    assert not [k for k in metrics if k.startswith("coco_panoptic_val2017/grounding")]
    assert not [k for k in metrics if k.startswith("refcocog_umd_val/coco_panoptic")]
    tasks = {k.split("/")[1] for k in metrics if k.startswith("karpathy_test/")}
    assert tasks == {"retrieval"}


def test_the_sets_hold_the_images_of_their_files(coco_val_metrics):
    """RefCOCOg val: the images of the refs' val split; COCO-Entity: only the images with a
    sentence; Karpathy: the test split's images."""
    import json
    import pickle

    cfg, runner, _ = coco_val_metrics
    sets = runner.test_dataloader.dataset.datasets

    def ids(ds):
        return {ds.get_data_info(i)["img_id"] for i in range(len(ds))}

    root = cfg.test_dataloader.dataset.datasets[0].data_root
    with open(root + "refcocog/refs(umd).p", "rb") as f:
        refs = pickle.load(f)
    assert ids(sets[1]) == {r["image_id"] for r in refs if r["split"] == "val"}
    entity = json.load(open(root + "coco/annotations/entity_val2017.json"))
    assert ids(sets[2]) == {a["image_id"] for a in entity["annotations"]}
    karpathy = json.load(open(root + "coco/annotations/dataset_coco.json"))
    test_ids = {int(i["cocoid"]) for i in karpathy["images"] if i["split"] == "test"}
    assert ids(sets[4]) == test_ids
    for i, ds in enumerate(sets):
        sample = runner.test_dataloader.dataset[int(sum(len(s) for s in sets[:i]))]
        assert sample["data_samples"].find_dataset_index == i


def test_refseg_metric_agrees_with_find_grounding(coco_val_metrics):
    """Same sentences, same masks: mmdet's RefSegMetric (per-sentence IoU = I / U, an empty
    union counts 0) is FIND's cIoU_exact / mIoU_exact."""
    _, _, m = coco_val_metrics
    p = "refcocog_umd_val/"
    assert float(m[p + "refseg/cIoU"]) == pytest.approx(m[p + "grounding/cIoU_exact"], abs=1e-4)
    assert float(m[p + "refseg/mIoU"]) == pytest.approx(m[p + "grounding/mIoU_exact"], abs=1e-4)
    assert m[p + "grounding/cIoU"] == pytest.approx(m[p + "grounding/cIoU_exact"], abs=1e-3)


def test_refseg_metric_on_a_hand_case():
    """pred_grounding_masks / gt_masks as the detector and PackFINDInputs write them, read by
    mmdet's RefSegMetric: sentence 1 overlaps 3 of 7 union pixels, sentence 2 has empty
    prediction and ground truth (IoU 0)."""
    from types import SimpleNamespace

    from mmdet.evaluation import RefSegMetric
    from mmdet.structures import DetDataSample

    from find_plugin.mmdet.detector import FINDDetector
    from find_plugin.mmdet.transforms import PackFINDInputs

    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, 0, :3] = True  # 3 pixels
    gt[0, 1, :3] = True  # 6 pixels
    logits = torch.full((2, 4, 4), -1.0)
    logits[0, 0, :3] = 2.0
    logits[0, 3, 3] = 0.5  # 4 predicted pixels, 3 of them right: I = 3, U = 7
    results = {
        "img": np.zeros((4, 4, 3), dtype=np.uint8),
        "img_id": 7,
        "img_path": "x.jpg",
        "ori_shape": (4, 4),
        "img_shape": (4, 4),
        "scale_factor": (1.0, 1.0),
        "find_gt": {"grounding_masks": gt},
    }
    ds = PackFINDInputs().transform(results)["data_samples"]
    assert isinstance(ds, DetDataSample)
    FINDDetector._fill(SimpleNamespace(), ds, {"grounding_masks": logits})
    metric = RefSegMetric()
    metric.process({}, [ds.to_dict()])
    out = metric.compute_metrics(metric.results)
    assert float(out["cIoU"]) == pytest.approx(100 * 3 / 7)
    assert float(out["mIoU"]) == pytest.approx(100 * (3 / 7 + 0) / 2)


def _count(prefix, index):
    """A stand-in metric of set ``index``: the img_ids it processed; a sample of another set is
    an error (a real metric would read fields that sample lacks)."""
    from mmengine.evaluator import BaseMetric

    class Count(BaseMetric):
        def process(self, data_batch, data_samples):
            for s in data_samples:
                assert s["find_dataset_index"] == index, (prefix, index, s)
                self.results.append(s["img_id"])

        def compute_metrics(self, results):
            return {"ids": sorted(results)}

    return Count(prefix=prefix)


def test_dataset_metrics_take_only_their_set(monkeypatch):
    from mmdet.evaluation import MultiDatasetsEvaluator
    from mmdet.evaluation.evaluator import multi_datasets_evaluator

    from find_plugin.mmdet.multi_datasets import FINDDatasetMetrics

    # mmengine's distributed gathering (collect_results_cpu) drops None entries before cutting
    # the padded tail: the same here, with one rank
    monkeypatch.setattr(
        multi_datasets_evaluator,
        "collect_results",
        lambda results, size, device: [r for r in results if r is not None][:size],
    )
    evaluator = MultiDatasetsEvaluator(
        [FINDDatasetMetrics(i, [_count("a", i), _count("b", i)]) for i in range(2)], ["s0", "s1"]
    )
    evaluator.dataset_meta = [dict(cumulative_sizes=[3, 5]), dict(cumulative_sizes=[3, 5])]
    samples = [{"img_id": i, "find_dataset_index": int(i >= 3)} for i in range(5)]
    evaluator.process(samples[:2])
    evaluator.process(samples[2:])
    out = evaluator.evaluate(5)
    assert out == {
        "s0/a/ids": [0, 1, 2],
        "s0/b/ids": [0, 1, 2],
        "s1/a/ids": [3, 4],
        "s1/b/ids": [3, 4],
    }
    with pytest.raises(KeyError, match="FINDConcatDataset"):
        evaluator.process([{"img_id": 9}])
    with pytest.raises(ValueError, match="prefixes"):
        FINDDatasetMetrics(0, [_count("a", 0), _count("a", 0)])


def test_images_with_keeps_the_gallery_of_the_entity_file(demo_root, tmp_path):
    """COCO-Entity evaluates only the images with a sentence (detectron2's gallery)."""
    import json

    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    src = os.path.join(demo_root, "coco", "annotations", "find_entity_val2017.json")
    data = json.load(open(src))
    dropped = data["annotations"][0]["image_id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != dropped]
    path = tmp_path / "entity.json"
    path.write_text(json.dumps(data))
    cfg = C.demo_cfg(demo_root)
    ds_cfg = C.val_sets(cfg)[0].copy()
    ds_cfg.update(entity_ann_file=str(path), pipeline=[])
    every = DATASETS.build(ds_cfg)
    gallery = DATASETS.build(dict(ds_cfg, images_with="entity_info"))
    ids = {gallery.get_data_info(i)["img_id"] for i in range(len(gallery))}
    assert len(every) == len(gallery) + 1 and dropped not in ids
    with pytest.raises(ValueError, match="images_with must be None or one of"):
        DATASETS.build(dict(ds_cfg, images_with="entities"))


def test_a_batch_across_two_sets_runs_each_samples_tasks(coco_val_metrics):
    """A batch (or a rank's share, distributed) may span two sets: the panoptic sample gets its
    panoptic prediction, the Karpathy one its caption embeddings, in one test_step."""
    from mmengine.dataset import pseudo_collate

    _, runner, _ = coco_val_metrics
    concat = runner.test_dataloader.dataset
    first_karpathy = concat.cumulative_sizes[3]
    batch = pseudo_collate([concat[0], concat[first_karpathy]])
    with torch.no_grad():
        panoptic, karpathy = runner.model.test_step(batch)
    assert "pred_panoptic_seg" in panoptic and "pred_caption_embeddings" in panoptic
    assert "pred_panoptic_seg" not in karpathy and "pred_interactive_ious" not in karpathy
    captions = karpathy.find_gt["captions"]
    assert karpathy.pred_caption_embeddings.shape[0] == len(captions) > 0
    h, w = panoptic.ori_shape
    assert panoptic.pred_panoptic_seg.sem_seg.shape[-2:] == (h, w)
