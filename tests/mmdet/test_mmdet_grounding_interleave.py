"""Grounding and interleave on the MMDetection side: ``FINDCocoPanopticDataset`` joins the
RefCOCO-style refs and the FIND-Bench entity sentences per image, ``FINDLoadTaskMasks`` +
``FINDSampleTasks`` give their masks (training: moved by mmdet's flip / resize like the panoptic
masks; evaluation: ground truth at the original size), and ``loss`` trains both tasks.

Expected values are read from the demo files directly (pickle, json, PNG via PIL), not through
``find_plugin.data``."""

import collections
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))


@pytest.fixture(scope="module")
def built(demo_root):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = C.demo_cfg(demo_root)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset.datasets[0])
    return cfg, train, val


def _refs(root, split):
    with open(os.path.join(root, "refcoco", "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)  # the demo's own file (trusted)
    with open(os.path.join(root, "refcoco", "instances.json")) as f:
        anns = {a["id"]: a for a in json.load(f)["annotations"]}
    out = collections.defaultdict(list)
    for r in refs:
        if r["split"] == split:
            out[r["image_id"]].append((r, anns[r["ann_id"]]))
    return out


def _entities(root, split):
    with open(os.path.join(root, "coco", "annotations", f"find_entity_{split}2017.json")) as f:
        data = json.load(f)
    out = collections.defaultdict(list)
    for a in data["annotations"]:
        out[a["image_id"]].append(a)
    return out


def _panoptic_ids(path):
    c = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


def test_dataset_joins_refs_and_entities(built, demo_root):
    _, train, val = built
    for ds, split in ((train, "train"), (val, "val")):
        refs, ents = _refs(demo_root, split), _entities(demo_root, split)
        assert sum(len(v) for v in refs.values()) > 0 and ents
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            img = info["img_id"]
            got = [g["ann_id"] for g in info["grounding_info"]]
            assert got == [a["id"] for _, a in refs.get(img, [])], img
            want = [[s["raw"] for s in r["sentences"]] for r, _ in refs.get(img, [])]
            assert [g["sentences"] for g in info["grounding_info"]] == want
            assert [e["sentence"] for e in info["entity_info"]] == [
                a["sentence"] for a in ents.get(img, [])
            ]


def test_entity_of_an_image_outside_the_panoptic_json_fails(built, demo_root, tmp_path):
    cfg, _, _ = built
    from mmdet.registry import DATASETS

    src = os.path.join(demo_root, "coco", "annotations", "find_entity_val2017.json")
    data = json.load(open(src))
    data["annotations"][0]["image_id"] = 987654321
    bad = tmp_path / "entity.json"
    bad.write_text(json.dumps(data))
    ds_cfg = cfg.val_dataloader.dataset.datasets[0].copy()
    ds_cfg.entity_ann_file = str(bad)
    with pytest.raises(ValueError, match=r"entity\.json annotations\[0\].*987654321.*not in"):
        DATASETS.build(ds_cfg)


def test_eval_ground_truth_is_the_ref_and_phrase_segments(built, demo_root):
    _, _, val = built
    refs, ents = _refs(demo_root, "val"), _entities(demo_root, "val")
    checked = 0
    for i in range(4):
        info = val.get_data_info(i)
        sample = val[i]["data_samples"]
        gt = sample.find_gt
        want = [
            mask_utils.decode(dict(a["segmentation"], counts=a["segmentation"]["counts"].encode()))
            for r, a in refs[info["img_id"]]
            for _ in r["sentences"]
        ]
        assert gt["grounding_masks"].shape == (len(want), info["height"], info["width"])
        for m, w in zip(gt["grounding_masks"], want):
            assert m.any() and torch.equal(m, torch.from_numpy(w.astype(bool)))
        ids = _panoptic_ids(info["seg_map_path"])
        phrases = sorted(ents[info["img_id"]][0]["phrase"], key=lambda p: p["start_idx"])
        assert gt["interleave_masks"].shape[0] == len(phrases) > 0
        for m, p in zip(gt["interleave_masks"], phrases):
            assert m.any() and torch.equal(m, torch.from_numpy(ids == p["annotation_id"]))
        # the sample of the (resized) image: one mask per sentence / phrase at img_shape
        h, w = sample.metainfo["img_shape"]
        assert sample.find_samples["grounding"]["masks"].shape == (len(want), h, w)
        assert sample.find_samples["interleave"]["masks"].shape == (len(phrases), h, w)
        checked += 1
    assert checked == 4


def test_training_masks_are_the_moved_panoptic_segments(built):
    """Training masks went through flip + resize with the panoptic masks: every grounding /
    interleave mask is one of the image's moved segments (thing masks or stuff regions)."""
    cfg, train, _ = built
    modes, n_phrases = set(), 0
    for i in range(len(train)):
        sample = train[i]["data_samples"]
        h, w = sample.metainfo["img_shape"]
        segs = [m for m in torch.as_tensor(sample.gt_instances.masks.to_ndarray()).bool()]
        sem = torch.as_tensor(sample.gt_sem_seg.sem_seg)[0]
        segs += [sem == c for c in sem.unique().tolist() if c >= 5 and c != 255]  # stuff
        assert len(sample.gt_instances) == len(sample.gt_instances.labels)
        # the language masks were taken out (PackDetInputs would put them, ignore-flagged, in
        # ignored_instances)
        for inst in (sample.gt_instances, sample.get("ignored_instances")):
            assert inst is None or (inst.labels >= 0).all()
        g = sample.find_samples["grounding"]
        modes.add(g["mode"])
        for m in g["masks"]:
            assert m.shape == (h, w) and any(torch.equal(m, s) for s in segs)
        for m in sample.find_samples["interleave"]["masks"]:
            assert m.shape == (h, w) and any(torch.equal(m, s) for s in segs)
            n_phrases += 1
    assert modes == {"text"}  # every demo training image has refs: referring sentences
    assert n_phrases > 0


def test_loss_trains_grounding_and_interleave(built):
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate

    cfg, train, _ = built
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    data = model.data_preprocessor(pseudo_collate([train[0], train[1]]), True)
    samples = data["data_samples"]
    assert all(s.find_samples["grounding"]["mode"] == "text" for s in samples)
    assert all(len(s.find_samples["interleave"]["masks"]) > 0 for s in samples)
    losses = model(**data, mode="loss")
    for key in ("loss_grounding_bce", "loss_grounding_dice", "loss_interleave_bce"):
        assert key in losses, (key, sorted(losses))
        assert torch.isfinite(losses[key]) and losses[key] > 0, key


def test_pipeline_without_find_load_task_masks_fails(built):
    """Refs without their masks would train on empty masks: the pipeline must say what to add."""
    from mmdet.registry import DATASETS

    cfg, _, _ = built
    ds_cfg = cfg.val_dataloader.dataset.datasets[0].copy()
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t["type"] != "FINDLoadTaskMasks"]
    ds = DATASETS.build(ds_cfg)
    with pytest.raises(KeyError, match="FINDLoadTaskMasks"):
        ds[0]
