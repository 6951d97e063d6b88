"""register_find_dataset / register_find_demo: panoptic + captions + refs + entity sentences
joined per image, tasks declared from the files given, errors for annotations of other images
(CPU, seconds; a 6 + 4 image demo dataset written by tools/build_demo_dataset.py)."""

import itertools
import json
import pathlib
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO

from find_plugin.d2.datasets import (
    default_find_tasks,
    demo_metadata,
    register_find_dataset,
    register_find_demo,
    rgb2id,
)
from tests._util import load_module

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "build_demo_dataset.py"
_COUNT = itertools.count()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    mod = load_module("find_build_demo_dataset_d2", _TOOL)
    root = tmp_path_factory.mktemp("demo_root")
    info = mod.build_demo_dataset(str(root), seed=1, num_train=6, num_val=4, progress=False)
    prefix = f"find_demo_t{next(_COUNT)}"
    register_find_demo(str(root), prefix=prefix)
    return {"root": str(root), "prefix": prefix, **info}


def test_demo_names_join_every_annotation_on_its_image(demo):
    p = demo["prefix"]
    train = DatasetCatalog.get(f"{p}_train")
    val = DatasetCatalog.get(f"{p}_val")
    assert len(train) == 6 and len(val) == 4
    refs = pickle.load(open(demo["refs_pickle"], "rb"))
    coco = COCO(demo["refcoco_instances_json"])
    for dicts, split in ((train, "train"), (val, "val")):
        n_refs = sum(len(d["grounding_info"]) for d in dicts)
        assert n_refs == sum(r["split"] == split for r in refs) > 0
        for d in dicts:
            ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.uint8))
            assert d["captions"] and len(d["entity_info"]) == 1
            for g in d["grounding_info"]:
                ann = coco.loadAnns([g["ann_id"]])[0]
                assert ann["image_id"] == d["image_id"]
                mask = coco.annToMask(ann).astype(bool)
                assert len(np.unique(ids[mask])) == 1  # the ref is one segment of this image
            for ph in d["entity_info"][0]["phrases"]:
                assert (ids == ph["annotation_id"]).any()
                assert d["entity_info"][0]["sentence"][ph["start"] : ph["end"]] == ph["phrase"]


def test_demo_names_declare_tasks_and_standard_metadata(demo):
    p = demo["prefix"]
    train, val = MetadataCatalog.get(f"{p}_train"), MetadataCatalog.get(f"{p}_val")
    assert train.find_train_tasks == (
        "generic",
        "grounding",
        "interactive",
        "retrieval",
        "interleave",
    )
    assert val.find_train_tasks == ()
    assert set(val.find_eval_tasks) == {
        "generic",
        "interactive",
        "grounding",
        "retrieval",
        "interleave",
        "interleave_retrieval",
    }
    assert val.evaluator_type == "coco_panoptic_seg" and val.json_file.endswith(".json")
    assert val.stuff_classes == demo_metadata()["stuff_classes"]
    assert MetadataCatalog.get(f"{p}_karpathy_test").find_eval_tasks == ("retrieval",)
    assert len(DatasetCatalog.get(f"{p}_karpathy_test")) == 4


def test_default_tasks_follow_the_files():
    assert default_find_tasks(training=True, captions=False, refs=False, entities=False) == (
        "generic",
        "grounding",
        "interactive",
    )
    assert default_find_tasks(training=False, captions=True, refs=False, entities=True) == (
        "generic",
        "interactive",
        "retrieval",
        "interleave",
        "interleave_retrieval",
    )


def _register(demo, name, split, **kwargs):
    register_find_dataset(name, demo_metadata(), training=split == "train", **demo[split], **kwargs)


def test_refs_of_another_split_are_an_error_naming_the_image(demo):
    name = f"find_demo_bad_refs_{next(_COUNT)}"
    _register(
        demo,
        name,
        "train",
        refs_file=demo["refs_pickle"],
        refs_instances_json=demo["refcoco_instances_json"],
        refs_split="val",  # val refs are on val images: not in the train panoptic set
    )
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p annotates image \d+, which is not in"):
        DatasetCatalog.get(name)


def test_entities_of_another_split_and_missing_refs_keys_are_errors(demo):
    name = f"find_demo_bad_entities_{next(_COUNT)}"
    _register(demo, name, "train", entity_json=demo["entity_val_json"])
    with pytest.raises(ValueError, match="not in the panoptic annotations"):
        DatasetCatalog.get(name)
    name = f"find_demo_bad_refs_args_{next(_COUNT)}"
    _register(demo, name, "val", refs_file=demo["refs_pickle"])
    with pytest.raises(ValueError, match="needs refs_instances_json"):
        DatasetCatalog.get(name)
    with pytest.raises(KeyError, match="metadata lacks"):
        register_find_dataset("x", {}, training=True, **demo["val"])


def test_train_net_register_runs_the_users_registration_file(demo, tmp_path):
    train_net = load_module("find_train_net_register", _TOOL.parent / "train_net.py")
    name = f"my_data_{next(_COUNT)}"
    script = tmp_path / "my_datasets.py"
    script.write_text(
        "from find_plugin.d2.datasets import demo_metadata, demo_paths, register_find_dataset\n"
        f"p = demo_paths({demo['root']!r})\n"
        f"register_find_dataset({name!r}, demo_metadata(), training=True, **p['train'])\n"
    )
    args = train_net.get_parser().parse_args(["--register", str(script), "--config-file", "x"])
    train_net.register_datasets(args.register)
    assert MetadataCatalog.get(name).find_train_tasks == (
        "generic",
        "grounding",
        "interactive",
        "retrieval",
    )
    assert len(DatasetCatalog.get(name)) == 6
    with pytest.raises(FileNotFoundError, match="--register: file .*nope.py"):
        train_net.register_datasets(str(tmp_path / "nope.py"))


def test_held_out_images_are_left_out_after_the_joins(demo, caplog):
    import functools
    import logging

    from find_plugin.d2.datasets import held_out_image_ids

    refs = pickle.load(open(demo["refs_pickle"], "rb"))
    karpathy = json.load(open(demo["karpathy_json"]))
    held = {r["image_id"] for r in refs if r["split"] == "train"}
    held_k = {i["cocoid"] for i in karpathy["images"] if i["split"] == "test"}
    ids = held_out_image_ids(
        "x",
        refs_file=demo["refs_pickle"],
        refs_splits=("train",),
        karpathy_json=demo["karpathy_json"],
    )
    assert ids == held | held_k and held and held_k
    name = f"find_demo_held_out_{next(_COUNT)}"
    exclude = functools.partial(
        held_out_image_ids, name, refs_file=demo["refs_pickle"], refs_splits=("train",)
    )
    _register(demo, name, "train", entity_json=demo["entity_train_json"], exclude_images=exclude)
    with caplog.at_level(logging.INFO, logger="find_plugin.d2.datasets.find_dataset"):
        dicts = DatasetCatalog.get(name)
    assert {d["image_id"] for d in dicts} == {
        d["image_id"] for d in DatasetCatalog.get(f"{demo['prefix']}_train")
    } - held
    assert f"{6 - len(dicts)} of 6 images left out" in caplog.text
    with pytest.raises(FileNotFoundError, match="refs pickle"):
        held_out_image_ids("x", refs_file=str(pathlib.Path(demo["root"]) / "nope.p"))
