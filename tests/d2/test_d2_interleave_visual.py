"""Interleave retrieval with visual references end to end on a tiny COCO in the real formats:
``tools/build_interleave_references.py`` with a tiny model -> the references file -> the
registered dataset -> the evaluation mapper (reference image + mask) -> the model -> the
evaluators, by hand and through ``tools/train_net.py --eval-only``; and the seed of evaluation
(same seed: same numbers; another seed: another split; the seed written with the results)."""

import json
import logging
import os
import pathlib

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser

from find_plugin.d2 import datasets as ds
from find_plugin.d2.evaluation import build_find_evaluator
from find_plugin.d2.mappers import build_find_mapper
from tests._util import load_module as _load

HERE = pathlib.Path(__file__).parent


C = _load("_d2_conftest_ivis", HERE / "conftest.py")
tiny = _load("_d2_tiny_dataset_ivis", HERE / "tiny_dataset.py")
bench = _load("_d2_refcoco_find_bench_ivis", HERE / "test_d2_refcoco_find_bench.py")
tool = _load(
    "_build_interleave_references", HERE.parent.parent / "tools" / "build_interleave_references.py"
)

train_net = _load("_find_train_net_ivis", HERE.parent.parent / "tools" / "train_net.py")

NUM_IMAGES = 10  # retrieval needs top-10


@pytest.fixture(autouse=True)
def _restore_loggers():
    """tools/train_net.py's setup reconfigures process-wide loggers: put them back."""
    names = ["", "detectron2", "fvcore", "find_plugin", "d2"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    yield
    for n, (handlers, propagate) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).propagate = propagate


def _cfg(tmp):
    cfg = C.tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 128
    cfg.OUTPUT_DIR = str(tmp / "output")
    return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Tiny val split, its entity file, the references file built by the tool (in-process)."""
    root = tmp_path_factory.mktemp("ivis")
    info = tiny.write_tiny_coco(root, split="val2017", num_images=NUM_IMAGES, seed=5)
    entity_json = bench.write_entities(info, "entity_val2017.json", images=NUM_IMAGES)
    cfg = _cfg(root)
    config_file = root / "tiny.yaml"
    config_file.write_text(cfg.dump())
    out = os.path.join(os.path.dirname(entity_json), "interleave_val2017.json")
    assert (
        tool.main(
            [
                "--config-file",
                str(config_file),
                "--entity-json",
                entity_json,
                "--output",
                out,
                "--no-progress",
            ]
        )
        == 0
    )
    return {"root": root, "info": info, "entity_json": entity_json, "out": out, "cfg": cfg}


def test_builder_picks_same_class_in_another_image(built):
    info, out = built["info"], json.load(open(built["out"]))
    assert not [n for n in os.listdir(os.path.dirname(built["out"])) if n.startswith(".tmp-")]
    segments = {(img["image_id"], s["id"]): s for img in info["images"] for s in img["segments"]}
    source = json.load(open(built["entity_json"]))
    assert [a["sentence"] for a in out["annotations"]] == [
        a["sentence"] for a in source["annotations"]
    ]
    n_ref = 0
    for ann in out["annotations"]:
        for p in ann["phrase"]:
            own = segments[(ann["image_id"], p["annotation_id"])]
            same_class_elsewhere = [
                s
                for (i, _), s in segments.items()
                if i != ann["image_id"]
                and s["category_id"] == own["category_id"]
                and not s["iscrowd"]
            ]
            if "reference" not in p:
                assert not same_class_elsewhere  # only when no candidate exists
                continue
            n_ref += 1
            ref = p["reference"]
            assert ref["image_id"] != ann["image_id"]
            picked = segments[(ref["image_id"], ref["annotation_id"])]
            assert picked["category_id"] == own["category_id"] and not picked["iscrowd"]
            assert -1.0 - 1e-6 <= ref["prob"] <= 1.0 + 1e-6
    # grass and sky are in every image: at least two references per sentence
    assert n_ref >= 2 * NUM_IMAGES
    assert out["reference_info"]["with_reference"] == n_ref


def test_pick_references_takes_the_most_similar_candidate():
    # rows: image 1 (cat 5, cat 6), image 2 (cat 5, cat 5 crowd), image 3 (cat 5)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.01], [0.8, 0.6]])
    images = torch.tensor([1, 1, 2, 2, 3])
    cats = torch.tensor([5, 6, 5, 5, 5])
    candidate = torch.tensor([True, True, True, False, True])
    picks = tool.pick_references(emb, images, cats, candidate, torch.tensor([0, 1, 2]))
    # row 0: the crowd row 3 (cos ~1) is excluded, row 4 (0.8) beats row 2 (0.6)
    assert picks[0][0] == 4 and picks[0][1] == pytest.approx(0.8)
    assert picks[1] is None  # no other image has category 6
    # row 2: its own image's row 3 is excluded; row 0 (0.6) < row 4 (0.96)
    assert picks[2][0] == 4 and picks[2][1] == pytest.approx(0.96)


def test_builder_bad_input_names_file_and_entry(built, tmp_path):
    bad = json.load(open(built["entity_json"]))
    bad["annotations"][1]["phrase"][0]["annotation_id"] = 77
    path = tmp_path / "entity_bad.json"
    path.write_text(json.dumps(bad))
    p = built["info"]["paths"]
    args = [
        "--config-file",
        str(built["root"] / "tiny.yaml"),
        "--entity-json",
        str(path),
        "--output",
        str(tmp_path / "x.json"),
        "--panoptic-json",
        p["panoptic_json"],
        "--panoptic-root",
        p["panoptic_root"],
        "--image-root",
        p["image_root"],
    ]
    with pytest.raises(tool.InputError, match=r"entity_bad\.json annotations\[1\] phrase\[0\].*77"):
        tool.main(args)
    with pytest.raises(tool.InputError, match=r"panoptic json not found: .*nowhere\.json"):
        tool.main(args[:-6] + ["--panoptic-json", str(tmp_path / "nowhere.json")] + args[-4:])
    assert not (tmp_path / "x.json").exists()


def _register(built, name, tasks):
    if name not in DatasetCatalog.list():
        p = built["info"]["paths"]
        ds.register_find_coco_entity(
            name,
            built["info"]["metadata"],
            p["image_root"],
            p["panoptic_root"],
            p["panoptic_json"],
            built["out"],
            p["captions_json"],
            find_eval_tasks=tasks,
        )
    return name


def _split(built, name, seed):
    """Which phrases the evaluation mapper makes visual, per image, with ``seed``."""
    cfg = built["cfg"].clone()
    cfg.MODEL.FIND.TEST.SEED = seed
    mapper = build_find_mapper(cfg, False, dataset_name=name)
    return [
        mapper(d)["find_samples"]["interleave_retrieval_visual"]["is_visual"].tolist()
        for d in DatasetCatalog.get(name)
    ]


def _evaluate(built, model, name, seed, out_dir):
    cfg = built["cfg"].clone()
    cfg.MODEL.FIND.TEST.SEED = seed
    mapper = build_find_mapper(cfg, False, dataset_name=name)
    evaluator = build_find_evaluator(cfg, name, str(out_dir))
    evaluator.reset()
    model.test["seed"] = seed
    for d in DatasetCatalog.get(name):
        inp = mapper(d)
        with torch.no_grad():
            evaluator.process([inp], model([inp]))
    return evaluator.evaluate()


def test_evaluation_reads_references_and_is_seeded(built, tiny_model, tmp_path):
    name = _register(built, "find_test_ivis_val", ("interleave", "interleave_retrieval_visual"))
    dicts = DatasetCatalog.get(name)
    ref = dicts[0]["entity_info"][0]["phrases"][1]["reference"]  # the grass
    assert ref["file_name"].endswith(".jpg") and ref["pan_seg_file_name"].endswith(".png")
    assert ref["image_id"] != dicts[0]["image_id"]

    # the mapper reads the reference image (resized as a query image) and its segment mask
    cfg = built["cfg"]
    inp = build_find_mapper(cfg, False, dataset_name=name)(dicts[0])
    sample = inp["find_samples"]["interleave_retrieval_visual"]
    for r in sample["references"]:
        if r is not None:
            assert r["image"].dtype == torch.uint8 and r["image"].shape[0] == 3
            assert r["mask"].shape == r["image"].shape[1:] and r["mask"].any()
            assert min(r["image"].shape[1:]) == 64

    # the visual/text split comes from the seed (and the image), nothing else
    split0, split1 = _split(built, name, 0), _split(built, name, 1)
    assert split0 == _split(built, name, 0) and split0 != split1
    assert any(any(s) for s in split0) and not all(all(s) for s in split0)

    model = tiny_model.eval()
    saved = model.test.get("seed")
    try:
        first = _evaluate(built, model, name, 1, tmp_path / "a")
    finally:
        model.test["seed"] = saved
    # the same protocol through tools/train_net.py --eval-only, with the seed on the command line
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pth")
    cfg = built["cfg"].clone()
    cfg.DATASETS.TEST, cfg.OUTPUT_DIR = (name,), str(tmp_path / "eval_only")
    cfg.DATALOADER.NUM_WORKERS = 0
    (tmp_path / "eval.yaml").write_text(cfg.dump())
    args = default_argument_parser().parse_args(
        ["--config-file", str(tmp_path / "eval.yaml"), "--eval-only"]
        + ["MODEL.WEIGHTS", str(tmp_path / "weights.pth"), "MODEL.FIND.TEST.SEED", "1"]
    )
    again = train_net.main(args)
    assert set(first) == {"interleave", "interleave_retrieval_visual"}
    assert set(first["interleave_retrieval_visual"]) == {"ir1", "ir5", "ir10", "tr1", "tr5", "tr10"}
    assert first["interleave_retrieval_visual"]["ir10"] == 100.0  # 10 images: all in the top 10
    # same seed: the same numbers (NaN-safe comparison of the serialised results)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    # the seed is written with the results
    for task in first:
        out_dir = tmp_path / "eval_only" / "inference" / name
        saved_json = json.load(open(out_dir / f"find_{task}_metrics.json"))
        assert saved_json["seed"] == 1 and saved_json[task] == again[task]
