"""Interleave retrieval with visual references on MMDetection: the dataset resolves each phrase's
reference image, FINDSampleTasks reads the reference image and segment, the detector embeds it
(extract_one) and FINDInterleaveRetrievalMetric scores with the shared computation."""

import json
import os
import pathlib

import pytest
import torch

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))

TASK = "interleave_retrieval_visual"


def add_references(demo_root: str, out: pathlib.Path) -> dict:
    """The demo's val entity file with a ``reference`` per phrase: the first segment of the same
    category in another image (what tools/build_interleave_references.py picks by similarity)."""
    ann = os.path.join(demo_root, "coco", "annotations")
    pan = json.load(open(os.path.join(ann, "panoptic_val2017.json")))
    by_cat = {}
    category = {}
    for a in pan["annotations"]:
        for s in a["segments_info"]:
            by_cat.setdefault(s["category_id"], []).append((a["image_id"], s["id"]))
            category[(a["image_id"], s["id"])] = s["category_id"]
    data = json.load(open(os.path.join(ann, "find_entity_val2017.json")))
    for a in data["annotations"]:
        for p in a["phrase"]:
            cat = category[(a["image_id"], p["annotation_id"])]
            other = [c for c in by_cat[cat] if c[0] != a["image_id"]]
            if other:
                p["reference"] = {"image_id": other[0][0], "annotation_id": other[0][1], "prob": 1}
    out.write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def visual(demo_root, tmp_path_factory):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    tmp = tmp_path_factory.mktemp("interleave_visual")
    entity_file = tmp / "interleave_val2017.json"
    data = add_references(demo_root, entity_file)
    cfg = C.demo_cfg(demo_root, work_dir=str(tmp / "work"))
    cfg.model.tasks[TASK] = dict(visual_prob=1.0)  # every phrase with a reference is visual
    ds_cfg = C.val_sets(cfg)[0].copy()
    load = [t for t in ds_cfg.pipeline if t["type"] in ("LoadImageFromFile", "Resize")]
    pipeline = []
    for t in ds_cfg.pipeline:
        if t["type"] == "FINDSampleTasks":
            t = dict(t, tasks=[TASK], task_options={TASK: dict(visual_prob=1.0)})
            t["reference_pipeline"] = load
        pipeline.append(t)
    ds_cfg.update(
        entity_ann_file=str(entity_file),
        images_with="entity_info",
        caption_ann_file=None,
        require_captions=False,
        refs_file=None,
        pipeline=pipeline,
    )
    cfg.test_dataloader = dict(cfg.val_dataloader, dataset=ds_cfg)
    cfg.test_evaluator = dict(type="FINDInterleaveRetrievalMetric")
    # mmengine keeps one visualizer per name in the process: a Runner built later (e.g.
    # test_mmdet_runner's) would log into this one's work dir under the shared default name
    cfg.visualizer.name = "visualizer_interleave_visual"
    return cfg, data, DATASETS.build(ds_cfg)


def test_reference_record_is_the_other_images_segment(visual, demo_root):
    from find_plugin.data import rgb2id

    _, data, ds = visual
    info = ds.get_data_info(0)
    phrase = info["entity_info"][0]["phrases"][0]
    ref = phrase["reference"]
    assert ref["img_path"].endswith(f"{ref['image_id']:012d}.jpg")
    sample = ds[0]["data_samples"].find_samples[TASK]
    record = ds.pipeline.transforms[-2]  # FINDSampleTasks
    assert record.read_reference is not None
    got = record.read_reference(ref)
    import mmcv

    png = mmcv.imread(ref["seg_map_path"], channel_order="rgb")
    full = rgb2id(png) == ref["annotation_id"]
    image = mmcv.imread(ref["img_path"])
    h, w = got["image"].shape[-2:]
    assert got["image"].dtype == torch.uint8 and got["image"].shape[0] == 3
    # resized like the query image (shortest edge 160, longest at most 256)
    scale = min(160 / min(image.shape[:2]), 256 / max(image.shape[:2]))
    assert (h, w) == (round(image.shape[0] * scale), round(image.shape[1] * scale))
    assert got["mask"].shape == (h, w) and got["mask"].any()
    frac = got["mask"].float().mean().item()
    assert frac == pytest.approx(full.mean(), abs=0.02)
    assert got["image_id"] == ref["image_id"] != info["img_id"]
    # visual_prob 1: every phrase of the first sentence with a reference is visual
    assert sample["is_visual"].all() and len(sample["references"]) == len(
        info["entity_info"][0]["phrases"]
    )
    assert sample["references"][0]["image_id"] == ref["image_id"]
    assert torch.equal(sample["references"][0]["mask"], got["mask"])


def test_runner_scores_interleave_retrieval_visual(visual):
    from mmengine.runner import Runner

    cfg, _, _ = visual
    runner = Runner.from_cfg(cfg)
    seen = []
    extract = runner.model.extract_one
    runner.model.extract_one = lambda image: seen.append(image.shape) or extract(image)
    metrics = runner.test()
    assert seen, "no reference image went through the detector"
    for k in ("ir1", "ir5", "ir10", "tr1", "tr5", "tr10"):
        v = metrics[f"{TASK}/{k}"]
        assert 0.0 <= v <= 100.0
    assert metrics[f"{TASK}/ir10"] >= metrics[f"{TASK}/ir1"]


def _sample(img_id, img, objs, query, ents, refs):
    return {
        "img_id": img_id,
        "pred_image_embedding": img,
        "pred_object_embeddings": objs,
        "pred_interleave_query_embedding": query,
        "pred_interleave_entity_embeddings": ents,
        "pred_interleave_entity_references": torch.tensor(refs, dtype=torch.long),
    }


def test_metric_on_a_hand_case():
    """10 images with orthogonal embeddings; query k equals image k for the first five, image
    k + 1 for the others: ir1 = 50, and ir5 = 50 (the other images tie at 0 and go in position
    order, before the own image of a missed query)."""
    from find_plugin.mmdet.metrics import FINDInterleaveRetrievalMetric

    eye = torch.eye(10)
    metric = FINDInterleaveRetrievalMetric()
    ids = [100 + k for k in range(10)]
    for k in range(10):
        target = k if k < 5 else (k + 1) % 10
        metric.process({}, [_sample(ids[k], eye[k], eye[k][None], eye[target], eye[:0], [])])
    out = metric.compute_metrics(metric.results)
    assert out["ir1"] == pytest.approx(50.0)
    assert out["ir5"] == pytest.approx(50.0)  # cos 0 elsewhere: ties go to the lower position

    metric = FINDInterleaveRetrievalMetric()
    with pytest.raises(ValueError, match=r"expected \[D\], \[D\], \[E, D\]"):
        metric.process({}, [_sample(1, eye[0], eye[:1], eye[:2], eye[:0], [])])


def test_visual_task_needs_reference_pipeline():
    from mmdet.utils import register_all_modules

    from find_plugin.mmdet.transforms import FINDSampleTasks

    register_all_modules(init_default_scope=True)
    with pytest.raises(ValueError, match="reference_pipeline"):
        FINDSampleTasks(tasks={TASK: dict(visual_prob=1.0)}, training=False)


def test_reference_ids_name_their_gallery_image():
    """Every query ties (score 0) with every image except for the 1e-6 penalty of the image its
    entity references, its own: the own image drops to the last place (ir1 0, ir10 100). Image
    ids are not positions (100 + k), so a reference must be mapped with the images' codes."""
    from find_plugin.mmdet.metrics import FINDInterleaveRetrievalMetric

    eye = torch.eye(12)
    ids = [100 + k for k in range(10)]

    def run(refs):
        metric = FINDInterleaveRetrievalMetric()
        for k in range(10):
            # legend and entity orthogonal to every image and object embedding
            s = _sample(ids[k], eye[k], eye[k][None], eye[10], eye[11][None], [refs[k]])
            metric.process({}, [s])
        return metric.compute_metrics(metric.results)

    text = run([-1] * 10)
    assert text["ir1"] == pytest.approx(10.0)  # ties: image 0 first, only query 0 hits
    own = run(ids)
    assert own["ir1"] == pytest.approx(0.0) and own["ir10"] == pytest.approx(100.0)
