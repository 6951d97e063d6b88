"""tools/build_demo_dataset.py: the demo dataset loads through detectron2 and pycocotools, its
annotations agree with each other, and it is deterministic (CPU, a few seconds)."""

import hashlib
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image
from pycocotools.coco import COCO

from find_plugin.d2.datasets import load_karpathy_json, register_find_coco_panoptic, rgb2id
from find_plugin.d2.datasets.demo_scenes import compose_scene, load_sources
from tests._util import load_module

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "build_demo_dataset.py"
_SIZES = {"num_train": 6, "num_val": 4, "progress": False}


def _tool():
    return load_module("find_build_demo_dataset", _TOOL)


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def built(tool, tmp_path_factory):
    return tool.build_demo_dataset(str(tmp_path_factory.mktemp("demo")), seed=0, **_SIZES)


def _hashes(base):
    out = {}
    for d, _, files in os.walk(base):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, base)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _panoptic(base_split_paths, image_id):
    path = os.path.join(base_split_paths["panoptic_root"], f"{image_id:012d}.png")
    return rgb2id(np.asarray(Image.open(path), dtype=np.uint8))


def _photos(built):
    return json.load(open(os.path.join(built["base"], "licenses.json")))["photos"]


def test_detectron2_and_pycocotools_read_it(built):
    photo_ids = {p["image_id"] for p in _photos(built)}
    for split, n in (("train", 6), ("val", 4)):
        name = f"find_demo_test_{split}_{id(built)}"
        register_find_coco_panoptic(name, built["metadata"], **built[split])
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == n
        for d in dicts:
            assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
            assert len(d["captions"]) >= 2
            things = [s for s in d["segments_info"] if s["isthing"]]
            # composites: wall + ground + things; photos: coins on a void background
            stuff = 0 if d["image_id"] in photo_ids else 2
            assert len(things) >= 1 and len(d["segments_info"]) == len(things) + stuff
        coco = COCO(built[split]["instances_json"])
        assert len(coco.getImgIds()) == n and len(coco.getAnnIds()) >= n
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert coco.annToMask(ann).sum() == ann["area"]
        COCO(built[split]["captions_json"])
    gallery = load_karpathy_json(
        "demo_retrieval", built["karpathy_json"], built["karpathy_image_root"], ("test",)
    )
    assert len(gallery) == 4 and all(os.path.isfile(g["file_name"]) for g in gallery)
    assert {g["image_id"] for g in gallery} == set(COCO(built["val"]["instances_json"]).getImgIds())
    assert os.path.isfile(os.path.join(built["base"], "LICENSES.md"))
    sources = json.load(open(os.path.join(built["base"], "licenses.json")))["sources"]
    assert {s["source"] for s in sources} >= {"coins", "chelsea", "astronaut", "coffee", "horse"}
    assert all(s["licence"] for s in sources)


def test_masks_semantic_and_instances_agree_with_panoptic(built):
    meta = built["metadata"]
    contiguous = meta["stuff_dataset_id_to_contiguous_id"]
    for split in ("train", "val"):
        p = built[split]
        pan = json.load(open(p["panoptic_json"]))
        coco = COCO(p["instances_json"])
        for ann in pan["annotations"]:
            ids = _panoptic(p, ann["image_id"])
            sem = np.asarray(Image.open(os.path.join(p["sem_seg_root"], ann["file_name"])))
            assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
            assert (sem[ids == 0] == 255).all()  # void (photos' background) is ignored
            for s in ann["segments_info"]:
                m = ids == s["id"]
                assert m.sum() == s["area"]
                assert (sem[m] == contiguous[s["category_id"]]).all()
            inst = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
            things = [
                s
                for s in ann["segments_info"]
                if s["category_id"] in meta["thing_dataset_id_to_contiguous_id"]
            ]
            assert len(inst) == len(things)
            for a, s in zip(inst, things):
                assert a["category_id"] == s["category_id"]
                assert (coco.annToMask(a).astype(bool) == (ids == s["id"])).all()


def test_referring_expressions_point_at_panoptic_segments(built):
    refs = pickle.load(open(built["refs_pickle"], "rb"))
    coco = COCO(built["refcoco_instances_json"])
    assert {r["split"] for r in refs} == {"train", "val"}
    for r in refs:
        assert set(r) >= {"ref_id", "ann_id", "image_id", "split", "sentences", "category_id"}
        ann = coco.loadAnns([r["ann_id"]])[0]
        assert ann["image_id"] == r["image_id"] and ann["category_id"] == r["category_id"]
        split = "train" if r["split"] == "train" else "val"
        ids = _panoptic(built[split], r["image_id"])
        mask = coco.annToMask(ann).astype(bool)
        seg = np.unique(ids[mask])
        assert len(seg) == 1 and ((ids == seg[0]) == mask).all()
        name = coco.loadCats([r["category_id"]])[0]["name"]
        for s in r["sentences"]:
            assert (
                set(s) >= {"sent", "tokens", "raw", "sent_id"} and s["tokens"] == s["sent"].split()
            )
            assert name in s["sent"]


def test_entity_spans_match_phrases_and_segments(built):
    for split in ("train", "val"):
        data = json.load(open(built[f"entity_{split}_json"]))
        assert len(data["annotations"]) == len(data["images"])
        for ann in data["annotations"]:
            ids = _panoptic(built[split], ann["image_id"])
            raw = ann["sentence_raw"]
            assert 2 <= len(ann["phrase"]) <= 6
            for ph in ann["phrase"]:
                assert ann["sentence"][ph["start_idx"] : ph["end_idx"]] == ph["phrase"]
                start = ph["_start_idx"]
                assert raw[start : start + len(ph["phrase"]) + 1] == ph["phrase"] + ">"
                assert raw[:start].endswith(f"[{ph['annotation_id']}]<")
                assert (ids == ph["annotation_id"]).any()


def test_val_compositions_differ_from_train(built, tool):
    # The layout caption names every thing's category, colour and place, and the ground.
    captions = {}
    for split in ("train", "val"):
        data = json.load(open(built[split]["captions_json"]))
        captions[split] = {a["caption"] for a in data["annotations"] if "below" in a["caption"]}
    assert len(captions["train"]) == 5 and len(captions["val"]) == 3  # one photo each
    assert not captions["train"] & captions["val"]
    # The guard itself: the same draws with that layout already used give another layout.
    sources = load_sources()
    used = set()
    compose_scene(np.random.default_rng(3), sources, used, 1)
    again = set(used)
    compose_scene(np.random.default_rng(3), sources, again, 1)
    assert len(again) == 2


def test_real_photos_with_their_real_masks(built):
    """Photo images are windows of the coins photograph (disjoint rows for train and val) and
    their labels are the coins in it: bright round blobs on the dark void background."""
    from skimage.data import coins
    from skimage.filters import threshold_otsu

    photo, rows = coins().astype(np.float32), {"train": (0, 150), "val": (150, 303)}
    photos = _photos(built)
    assert {p["split"] for p in photos} == {"train", "val"}
    for p in photos:
        x, y, w, h = p["box"]
        assert rows[p["split"]][0] <= y and y + h <= rows[p["split"]][1]
        window = photo[y : y + h, x : x + w]
        window = window[:, ::-1] if p["mirrored"] else window
        path = os.path.join(built[p["split"]]["image_root"], f"{p['image_id']:012d}.jpg")
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        assert pixels.shape == (h, w, 3)
        assert np.abs(pixels - window[..., None]).mean() < 3.0  # JPEG error only
        ids = _panoptic(built[p["split"]], p["image_id"])
        coins_ids = [k for k in np.unique(ids) if k]
        assert len(coins_ids) >= 2 and (ids == 0).any()  # void background
        bright = window > threshold_otsu(window)
        for k in coins_ids:
            m = ids == k
            ys, xs = np.nonzero(m)
            fill = m.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
            assert bright[m].mean() > 0.75 and 0.55 < fill < 0.9, (p, k)
        assert bright[ids == 0].mean() < 0.2


def test_same_seed_identical_other_seed_differs(built, tool, tmp_path):
    first = _hashes(built["base"])
    again = tool.build_demo_dataset(str(tmp_path / "a"), seed=0, **_SIZES)
    assert sorted(first) == again["files"]
    assert _hashes(again["base"]) == first
    # overwrite replaces the folder: a stale file of an earlier build does not survive
    open(os.path.join(again["base"], "coco", "train2017", "stale.jpg"), "w").close()
    tool.build_demo_dataset(str(tmp_path / "a"), seed=0, overwrite=True, **_SIZES)
    assert _hashes(again["base"]) == first
    other = _hashes(tool.build_demo_dataset(str(tmp_path / "b"), seed=1, **_SIZES)["base"])
    assert set(other) == set(first)
    changed = [k for k in first if other[k] != first[k]]
    assert any(k.endswith(".jpg") for k in changed) and any(k.endswith(".json") for k in changed)


def test_bad_arguments_and_existing_folder_are_named(tool, tmp_path, built):
    with pytest.raises(ValueError, match="num_val"):
        tool.build_demo_dataset(str(tmp_path), num_val=0)
    root = os.path.dirname(built["base"])
    with pytest.raises(FileExistsError, match="overwrite"):
        tool.build_demo_dataset(root, seed=0, **_SIZES)
    assert not os.path.exists(os.path.join(root, "find_demo.partial"))
