"""FIND's detectron2 datasets on a tiny dataset written in the real COCO formats."""

import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg
from PIL import Image
from pycocotools.coco import COCO

from find_plugin.d2 import datasets as ds
from tests._util import load_module


def _load_tiny():
    path = pathlib.Path(__file__).with_name("tiny_dataset.py")
    return load_module("find_tiny_dataset", path)


tiny = _load_tiny()


def _name(prefix="tiny"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _register(info, **kwargs):
    name = _name()
    ds.register_find_coco_panoptic(name, info["metadata"], **info["paths"], **kwargs)
    return name


@pytest.fixture
def tiny_train(tmp_path):
    return tiny.write_tiny_coco(tmp_path, split="train2017", num_images=3, seed=0)


def _ids(path):
    return ds.rgb2id(np.asarray(Image.open(path).convert("RGB")))


def test_tiny_dataset_loads_through_detectron2_and_pycocotools(tiny_train):
    info = tiny_train
    name = _register(info)
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    pan = json.load(open(info["paths"]["panoptic_json"]))
    cat_ids = {c["id"]: c for c in info["categories"]}
    assert [d["image_id"] for d in dicts] == [a["image_id"] for a in pan["annotations"]]
    captions = COCO(info["paths"]["captions_json"])
    instances = COCO(info["paths"]["instances_json"])
    for d, ann in zip(dicts, pan["annotations"]):
        ids = _ids(d["pan_seg_file_name"])
        semantic = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert [s["id"] for s in d["segments_info"]] == [s["id"] for s in ann["segments_info"]]
        for s, raw in zip(d["segments_info"], ann["segments_info"]):
            # contiguous id = the category's position in stuff_classes; isthing from categories
            assert meta.stuff_classes[s["category_id"]] == cat_ids[raw["category_id"]]["name"]
            assert s["isthing"] == bool(cat_ids[raw["category_id"]]["isthing"])
            assert (semantic[ids == s["id"]] == s["category_id"]).all()
        assert (semantic[ids == 0] == 255).all()
        want = [a["caption"] for a in captions.loadAnns(captions.getAnnIds(imgIds=d["image_id"]))]
        assert d["captions"] == want and len(want) >= 2
        # instances json (pycocotools RLE) agrees with the panoptic PNG, thing by thing
        for a in instances.loadAnns(instances.getAnnIds(imgIds=d["image_id"])):
            seg = next(s for s in ann["segments_info"] if s["bbox"] == a["bbox"])
            assert (instances.annToMask(a).astype(bool) == (ids == seg["id"])).all()
    assert any(s["iscrowd"] for d in dicts for s in d["segments_info"])
    # detectron2's own readers on the other files
    inst = load_coco_json(info["paths"]["instances_json"], info["paths"]["image_root"])
    assert len(inst) == 3 and all(len(r["annotations"]) >= 1 for r in inst)
    sem = load_sem_seg(info["paths"]["sem_seg_root"], info["paths"]["image_root"])
    assert [r["sem_seg_file_name"] for r in sem] == [d["sem_seg_file_name"] for d in dicts]
    # detectron2's usual metadata and FIND's task declarations
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.json_file == info["paths"]["instances_json"]
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    assert meta.thing_classes == ["person", "car", "dog"]
    assert meta.stuff_classes[3:] == ["sky-other-merged", "grass-merged"]
    assert meta.find_train_tasks == ("generic", "grounding", "interactive", "retrieval")
    assert meta.find_eval_tasks == ("generic",)
    assert meta.find_eval_mapper == "find_panoptic_eval"


def test_writer_is_deterministic(tmp_path):
    a = tiny.write_tiny_coco(tmp_path / "a", split="val2017", num_images=2, seed=3)
    b = tiny.write_tiny_coco(tmp_path / "b", split="val2017", num_images=2, seed=3)
    c = tiny.write_tiny_coco(tmp_path / "c", split="val2017", num_images=2, seed=4)
    for key in ("panoptic_json", "captions_json", "instances_json"):
        assert open(a["paths"][key]).read() == open(b["paths"][key]).read()
    png = a["images"][0]["pan_seg_file_name"]
    assert open(png, "rb").read() == open(png.replace("/a/", "/b/"), "rb").read()
    assert open(png, "rb").read() != open(c["images"][0]["pan_seg_file_name"], "rb").read()


def test_standard_names_are_registered_lazily_under_detectron2_datasets(tmp_path):
    root = tmp_path / "nowhere"
    code = (
        "import time; t = time.perf_counter();"
        "import find_plugin.d2.datasets;"
        "from detectron2.data import DatasetCatalog, MetadataCatalog;"
        "m = MetadataCatalog.get('find_coco_2017_train_panoptic_caption');"
        "print(m.panoptic_json); print(m.captions_json); print(m.sem_seg_root);"
        "print(MetadataCatalog.get('find_coco_karpathy_test').json_file);"
        "print(sorted(n for n in DatasetCatalog.list() if n.startswith('find_')))"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == f"{root}/coco/annotations/panoptic_train2017.json"
    assert out[1] == f"{root}/coco/annotations/captions_train2017.json"
    assert out[2] == f"{root}/coco/panoptic_semseg_train2017"
    assert out[3] == f"{root}/coco/annotations/dataset_coco.json"
    assert out[4] == str(
        [
            "find_coco_2017_train_joined",
            "find_coco_2017_train_panoptic_caption",
            "find_coco_2017_val_panoptic_with_sem_seg",
            "find_coco_entity_train2017",
            "find_coco_entity_val2017",
            "find_coco_entity_val2017_long",
            "find_coco_interleave_val2017",
            "find_coco_interleave_val2017_long",
            "find_coco_karpathy_test",
            "find_coco_karpathy_val",
            "find_demo_karpathy_test",
            "find_demo_train",
            "find_demo_val",
        ]
        + [f"find_refcoco_unc_{s}" for s in ("testA", "testB", "train", "val")]
        + [f"find_refcocog_umd_{s}" for s in ("test", "train", "val")]
        + [f"find_refcocoplus_unc_{s}" for s in ("testA", "testB", "train", "val")]
    )


def test_missing_dataset_fails_only_when_used_naming_the_path(tmp_path):
    paths = ds.coco_panoptic_paths(str(tmp_path / "absent"), "val2017")
    name = _name()
    t = time.perf_counter()
    ds.register_find_coco_panoptic(name, ds.coco_panoptic_metadata(), **paths)
    assert time.perf_counter() - t < 0.05
    with pytest.raises(FileNotFoundError, match=f"{name}.*{paths['panoptic_json']}"):
        DatasetCatalog.get(name)
    kname = _name()
    ds.register_find_karpathy(kname, **ds.karpathy_paths(str(tmp_path / "absent")))
    with pytest.raises(FileNotFoundError, match="absent/coco/annotations/dataset_coco.json"):
        DatasetCatalog.get(kname)
    # the built-in names too (when the data is absent where they point)
    builtin = MetadataCatalog.get("find_coco_2017_val_panoptic_with_sem_seg").panoptic_json
    if not os.path.isfile(builtin):
        with pytest.raises(FileNotFoundError, match=builtin):
            DatasetCatalog.get("find_coco_2017_val_panoptic_with_sem_seg")


def test_missing_panoptic_png_names_file_and_entry(tiny_train):
    last = tiny_train["images"][-1]
    os.remove(last["pan_seg_file_name"])
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(_register(tiny_train))
    assert last["pan_seg_file_name"] in str(e.value) and str(last["image_id"]) in str(e.value)
    first = tiny_train["images"][0]  # detectron2's reader asserts on the first entry itself
    os.remove(first["pan_seg_file_name"])
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(_register(tiny_train))
    assert first["pan_seg_file_name"] in str(e.value) and str(first["image_id"]) in str(e.value)


def test_unknown_category_id_names_file_image_and_id(tiny_train):
    path = tiny_train["paths"]["panoptic_json"]
    data = json.load(open(path))
    seg = data["annotations"][1]["segments_info"][2]
    seg["category_id"] = 999
    json.dump(data, open(path, "w"))
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get(_register(tiny_train))
    msg = str(e.value)
    assert path in msg and "category_id 999" in msg and f"segment {seg['id']}" in msg
    assert str(data["annotations"][1]["image_id"]) in msg


def test_image_without_captions(tiny_train):
    path = tiny_train["paths"]["captions_json"]
    data = json.load(open(path))
    bare = tiny_train["images"][1]["image_id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != bare]
    json.dump(data, open(path, "w"))
    with pytest.raises(ValueError, match=f"image {bare} .*no caption in {path}"):
        DatasetCatalog.get(_register(tiny_train))
    dicts = DatasetCatalog.get(_register(tiny_train, require_captions=False))
    assert [len(d["captions"]) > 0 for d in dicts] == [True, False, True]


def test_karpathy_split_loads_with_2017_image_names(tmp_path):
    val = tiny.write_tiny_coco(tmp_path, split="val2017", num_images=2)
    train = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=2)
    tiny.write_tiny_karpathy(tmp_path, [val, train])
    name = _name()
    ds.register_find_karpathy(name, **ds.karpathy_paths(str(tmp_path)))
    dicts = DatasetCatalog.get(name)
    images = val["images"] + train["images"]
    assert [d["image_id"] for d in dicts] == [i["image_id"] for i in images]
    assert [d["file_name"] for d in dicts] == [i["file_name"] for i in images]
    assert [d["captions"] for d in dicts] == [i["captions"] for i in images]
    meta = MetadataCatalog.get(name)
    assert meta.find_eval_tasks == ("retrieval",) and meta.find_eval_mapper == "find_retrieval_eval"
    # another split of the file is empty -> error naming the file
    other = _name()
    ds.register_find_karpathy(other, **ds.karpathy_paths(str(tmp_path)), splits=("val",))
    with pytest.raises(ValueError, match="dataset_coco.json has no image of split"):
        DatasetCatalog.get(other)
    os.remove(train["images"][1]["file_name"])
    with pytest.raises(FileNotFoundError, match=f"cocoid {train['images'][1]['image_id']}"):
        DatasetCatalog.get(name)


def test_metadata_is_required_and_things_come_first():
    with pytest.raises(KeyError, match="metadata lacks"):
        ds.register_find_coco_panoptic(_name(), {}, "a", "b", "c")
    meta = ds.panoptic_metadata(
        [{"id": 7, "name": "road", "isthing": 0}, {"id": 2, "name": "cat", "isthing": 1}]
    )
    assert meta["stuff_classes"] == ["cat", "road"] and meta["thing_classes"] == ["cat"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {2: 0}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {2: 0, 7: 1}
    coco = ds.coco_panoptic_metadata()
    assert len(coco["stuff_classes"]) == 133 and len(coco["thing_classes"]) == 80
    assert sorted(coco["thing_dataset_id_to_contiguous_id"].values()) == list(range(80))
