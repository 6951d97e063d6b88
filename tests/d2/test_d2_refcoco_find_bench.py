"""RefCOCO-style refs + FIND-Bench entity sentences on a tiny COCO written in the real formats:
registration, loading, the mapper records (spans, masks, token/entity maps) and bad input."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_utils

from find_plugin.d2 import datasets as ds
from find_plugin.d2 import mappers as mp
from find_plugin.tasks import build_task
from tests._util import load_module as _load

_HERE = pathlib.Path(__file__).parent
tiny = _load("find_tiny_dataset", _HERE / "tiny_dataset.py")
word_encoder = _load("find_tasks_conftest", _HERE.parent / "tasks" / "conftest.py").word_encoder
NAMES = {1: "person", 3: "car", 18: "dog", 187: "sky", 193: "grass"}
RECT = (5, 15, 10, 30)  # y0, y1, x0, x1 of the polygon annotation of image 0


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _ids(path):
    return ds.rgb2id(np.asarray(Image.open(path).convert("RGB")))


def _things(img):
    return [s for s in img["segments"] if s["category_id"] in (1, 3, 18) and not s["iscrowd"]]


def write_refcoco(root, info, *, protocol=2):
    """``refcocog/instances.json`` + ``refcocog/refs(umd).p``: one ref per non-crowd thing segment
    (RLE of its PNG mask), images 0-1 in "val", image 2 in "train", plus a polygon ref on image 0.
    Returns ``{ann_id: (image, segment id or None)}``."""
    folder = os.path.join(root, "refcocog")
    os.makedirs(folder, exist_ok=True)
    images, anns, refs, where = [], [], [], {}
    for i, img in enumerate(info["images"]):
        h, w = img["height"], img["width"]
        images.append(
            {
                "id": img["image_id"],
                "height": h,
                "width": w,
                "file_name": f"COCO_train2014_{img['image_id']:012d}.jpg",
            }
        )
        ids = _ids(img["pan_seg_file_name"])
        for s in _things(img):
            rle = mask_utils.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
            ann_id = 100 + len(anns)
            anns.append(
                {
                    "id": ann_id,
                    "image_id": img["image_id"],
                    "category_id": s["category_id"],
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                }
            )
            where[ann_id] = (img, s["id"])
            name = NAMES[s["category_id"]]
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": ann_id,
                    "image_id": img["image_id"],
                    "split": "val" if i < 2 else "train",
                    "category_id": s["category_id"],
                    "sentences": [
                        {"raw": f"The {name} number {len(refs)}", "sent_id": 0},
                        {"raw": f"a {name} in the picture", "sent_id": 1},
                    ],
                }
            )
    y0, y1, x0, x1 = RECT
    poly = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    anns.append({"id": 999, "image_id": images[0]["id"], "category_id": 1, "segmentation": poly})
    where[999] = (info["images"][0], None)
    refs.append(
        {
            "ref_id": len(refs),
            "ann_id": 999,
            "image_id": images[0]["id"],
            "split": "val",
            "category_id": 1,
            "sentences": [{"raw": "the box drawn as a polygon"}],
        }
    )
    with open(os.path.join(folder, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": []}, f)
    with open(os.path.join(folder, "refs(umd).p"), "wb") as f:
        pickle.dump(refs, f, protocol=protocol)
    return where


def _entity_sentence(img):
    """A sentence naming a thing, the grass and the sky, with spans, raw markup and ids."""
    segs = {s["category_id"]: s for s in img["segments"]}
    thing = _things(img)[0]
    parts = [
        ("a ", None),
        (f"small {NAMES[thing['category_id']]}", thing["id"]),
        (" stands on ", None),
        ("the grass", segs[193]["id"]),
        (" under ", None),
        ("the sky", segs[187]["id"]),
        (" today.", None),
    ]
    sentence, raw, phrases = "", "", []
    for text, sid in parts:
        if sid is not None:
            phrases.append(
                {
                    "annotation_id": sid,
                    "phrase": text,
                    "start_idx": len(sentence),
                    "end_idx": len(sentence) + len(text),
                    "_start_idx": len(sentence),
                }
            )
            raw += f"[{sid}]"
        sentence += text
        raw += text
    # the file lists phrases out of order: the loader sorts them by start
    phrases = phrases[1:] + phrases[:1]
    return {
        "image_id": img["image_id"],
        "sentence": sentence,
        "sentence_raw": raw,
        "phrase": phrases,
    }


def write_entities(info, file_name, *, images=2, edit=None):
    anns = [_entity_sentence(img) for img in info["images"][:images]]
    if edit:
        edit(anns)
    path = os.path.join(os.path.dirname(info["paths"]["panoptic_json"]), file_name)
    with open(path, "w") as f:
        json.dump({"images": [{"id": a["image_id"]} for a in anns], "annotations": anns}, f)
    return path


def _register_entity(info, path, training=False):
    name = _name("entity")
    p = info["paths"]
    ds.register_find_coco_entity(
        name,
        info["metadata"],
        p["image_root"],
        p["panoptic_root"],
        p["panoptic_json"],
        path,
        p["captions_json"],
        training=training,
    )
    return name


def _register_refcoco(root, split):
    name = _name("refcocog")
    ds.register_find_refcoco(name, **ds.refcoco_paths(str(root), "refcocog", "umd"), split=split)
    return name


@pytest.fixture
def train_info(tmp_path):
    return tiny.write_tiny_coco(tmp_path, split="train2017", num_images=3, seed=1)


@pytest.fixture
def val_info(tmp_path):
    return tiny.write_tiny_coco(tmp_path, split="val2017", num_images=3, seed=2)


def _eval_mapper(tasks, augmentations=()):
    return mp.FINDEvalMapper(
        augmentations=list(augmentations),
        image_format="RGB",
        tasks=tasks,
        encode_text=word_encoder,
        seed=0,
    )


# ----------------------------------------------------------------------------- registration


def test_builtin_names_are_registered_lazily_with_their_tasks(tmp_path):
    # a fresh process importing the package with no data on disk: registering reads nothing
    root = tmp_path / "nowhere"
    code = (
        "import find_plugin.d2.datasets;"
        "from detectron2.data import MetadataCatalog as M;"
        "print(M.get('find_refcocog_umd_val').refs_file);"
        "print(M.get('find_refcoco_unc_testA').json_file);"
        "print(M.get('find_coco_entity_val2017_long').entity_json)"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        f"{root}/refcocog/refs(umd).p",
        f"{root}/refcoco/instances.json",
        f"{root}/coco/annotations/entity_val2017_long.json",
    ]
    for split in ("train", "val", "test"):
        assert f"find_refcocog_umd_{split}" in DatasetCatalog.list()
    for split in ("train", "val", "testA", "testB"):
        assert f"find_refcoco_unc_{split}" in DatasetCatalog.list()
        assert f"find_refcocoplus_unc_{split}" in DatasetCatalog.list()
    val = MetadataCatalog.get("find_refcocog_umd_val")
    assert val.find_eval_tasks == ("grounding",) and val.find_train_tasks == ()
    assert MetadataCatalog.get("find_refcocog_umd_train").find_train_tasks == ("grounding",)
    assert val.refs_file.endswith(os.path.join("refcocog", "refs(umd).p"))
    assert MetadataCatalog.get("find_refcocoplus_unc_val").refs_file.endswith(
        os.path.join("refcoco+", "refs(unc).p")
    )
    for name in ("find_coco_entity_val2017", "find_coco_entity_val2017_long"):
        meta = MetadataCatalog.get(name)
        assert meta.find_eval_tasks == ("interleave", "interleave_retrieval")
        assert meta.find_train_tasks == ()
    train = MetadataCatalog.get("find_coco_entity_train2017")
    assert "interleave" in train.find_train_tasks
    assert train.entity_json.endswith(os.path.join("annotations", "entity_train2017.json"))
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p"):
        DatasetCatalog.get("find_refcocog_umd_val")


def test_evaluators_dispatch_through_the_registry():
    from find_plugin.d2 import add_find_config
    from find_plugin.d2.evaluation import build_find_evaluator
    from find_plugin.d2.evaluation.grounding import FINDGroundingEvaluator
    from find_plugin.d2.evaluation.retrieval import FINDRetrievalEvaluator

    cfg = get_cfg()
    add_find_config(cfg)
    ev = build_find_evaluator(cfg, "find_refcocog_umd_val")
    assert isinstance(ev, FINDGroundingEvaluator) and ev.task == "grounding"
    evs = build_find_evaluator(cfg, "find_coco_entity_val2017")._evaluators
    kinds = sorted((type(e).__name__, getattr(e, "task", None)) for e in evs)
    assert ("FINDGroundingEvaluator", "interleave") in kinds
    assert any(isinstance(e, FINDRetrievalEvaluator) for e in evs)


# ----------------------------------------------------------------------------- RefCOCO


def test_refcoco_loads_refs_joined_to_instance_masks(tmp_path, train_info):
    where = write_refcoco(tmp_path, train_info)
    dicts = DatasetCatalog.get(_register_refcoco(tmp_path, "val"))
    imgs = train_info["images"]
    assert [d["image_id"] for d in dicts] == [imgs[0]["image_id"], imgs[1]["image_id"]]
    # the 2014 name does not exist: the 2017 name of the same picture is used
    assert dicts[0]["file_name"] == imgs[0]["file_name"]
    assert (dicts[0]["height"], dicts[0]["width"]) == (imgs[0]["height"], imgs[0]["width"])
    assert len(dicts[0]["grounding_info"]) == len(_things(imgs[0])) + 1
    assert dicts[0]["grounding_info"][-1]["sentences"] == ["the box drawn as a polygon"]
    train = DatasetCatalog.get(_register_refcoco(tmp_path, "train"))
    assert [d["image_id"] for d in train] == [imgs[2]["image_id"]]

    # evaluation mapper: one entry per sentence, masks = the PNG segment (RLE) / the polygon
    d = dicts[0]
    out = _eval_mapper([build_task("grounding")])(d)
    gt = out["find_gt"]["grounding_masks"]
    sample = out["find_samples"]["grounding"]
    refs = d["grounding_info"]
    texts = [s.lower() for r in refs for s in r["sentences"]]
    assert gt.shape == (len(texts), d["height"], d["width"]) and gt.dtype == torch.bool
    # one query per sentence; equal texts share one encoded phrase
    unique = [p.text for p in sample["phrases"]]
    assert [unique[q] for q in sample["query_phrase"]] == texts
    assert len(unique) == len(set(texts))
    ids = _ids(imgs[0]["pan_seg_file_name"])
    k = 0
    for r in refs:
        img, sid = where[r["ann_id"]]
        if sid is None:
            expect = torch.zeros(d["height"], d["width"], dtype=torch.bool)
            y0, y1, x0, x1 = RECT
            expect[y0 : y1 + 1, x0 : x1 + 1] = True  # COCO polygons cover their right/bottom edge
            assert (gt[k] ^ expect).sum() <= (y1 - y0 + x1 - x0 + 2)
            assert gt[k][y0 + 1 : y1, x0 + 1 : x1].all() and not gt[k][:y0].any()
        else:
            expect = torch.from_numpy(ids == sid)
            assert torch.equal(gt[k], expect) and torch.equal(gt[k + 1], expect)
        k += len(r["sentences"])
    # no augmentation: the record masks are the ground truth itself
    assert torch.equal(sample["masks"], gt)

    # a resize moves the record masks, not the ground truth
    out = _eval_mapper([build_task("grounding")], [mp.FixedResizeShortestEdge(24, 1000)])(d)
    small = out["find_samples"]["grounding"]["masks"]
    assert small.shape[-2:] == out["image"].shape[-2:] and small.shape[-2] == 24
    assert torch.equal(out["find_gt"]["grounding_masks"], gt)
    big = torch.nn.functional.interpolate(small[None].float(), size=gt.shape[-2:])[0] > 0.5
    iou = (big & gt).sum((1, 2)) / (big | gt).sum((1, 2))
    assert (iou > 0.6).all(), iou


def test_refcoco_bad_input_names_file_and_entry(tmp_path, train_info):
    write_refcoco(tmp_path, train_info)
    refs_path = os.path.join(tmp_path, "refcocog", "refs(umd).p")
    refs = pickle.load(open(refs_path, "rb"))
    refs[1]["ann_id"] = 424242
    pickle.dump(refs, open(refs_path, "wb"))
    with pytest.raises(ValueError, match=r"refs\(umd\)\.p ref #1 \(ref_id 1\).*ann_id 424242"):
        DatasetCatalog.get(_register_refcoco(tmp_path, "val"))
    refs[1]["ann_id"] = refs[0]["ann_id"]
    refs[1]["sentences"] = []
    pickle.dump(refs, open(refs_path, "wb"))
    with pytest.raises(ValueError, match=r"ref #1 \(ref_id 1\) has no sentence"):
        DatasetCatalog.get(_register_refcoco(tmp_path, "val"))


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_with_anything_but_plain_data_is_refused(tmp_path, train_info, monkeypatch):
    from fractions import Fraction

    plain = [{"a": (1, 2.5, None, True), "b": {1, 2}, "c": b"\x00\xff", "d": "é"}]
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"plain{protocol}.p"
        path.write_bytes(pickle.dumps(plain, protocol=protocol))
        assert ds.load_plain_pickle(str(path)) == plain

    monkeypatch.chdir(tmp_path)
    shell = tmp_path / "shell.p"
    shell.write_bytes(pickle.dumps([{"ref_id": 0}, _Shell()], protocol=2))
    with pytest.raises(ds.UnsafePickleError, match=r"shell\.p.*(posix|os|nt)\.system"):
        ds.load_plain_pickle(str(shell))
    assert not (tmp_path / "pwned.txt").exists()
    instance = tmp_path / "instance.p"
    instance.write_bytes(pickle.dumps([Fraction(1, 2)]))
    with pytest.raises(ds.UnsafePickleError, match=r"instance\.p.*fractions\.Fraction"):
        ds.load_plain_pickle(str(instance))

    # through the dataset: the refs pickle of a registered split
    write_refcoco(tmp_path, train_info)
    refs_path = tmp_path / "refcocog" / "refs(umd).p"
    refs_path.write_bytes(shell.read_bytes())
    with pytest.raises(ds.UnsafePickleError, match=r"refs\(umd\)\.p.*system"):
        DatasetCatalog.get(_register_refcoco(tmp_path, "val"))
    assert not (tmp_path / "pwned.txt").exists()


# ----------------------------------------------------------------------------- FIND-Bench


def test_entity_dataset_loads_spans_and_masks(val_info):
    def second_sentence(anns):  # image 0 gets a second sentence, after the first
        anns.append(dict(anns[0], phrase=anns[0]["phrase"][:1]))

    path = write_entities(val_info, "entity_val2017.json", edit=second_sentence)
    name = _register_entity(val_info, path)
    dicts = DatasetCatalog.get(name)
    imgs = val_info["images"]
    # evaluation keeps only images with a sentence (the official gallery)
    assert [d["image_id"] for d in dicts] == [imgs[0]["image_id"], imgs[1]["image_id"]]
    assert "pan_seg_file_name" in dicts[0] and dicts[0]["segments_info"]
    assert [len(d["entity_info"]) for d in dicts] == [2, 1]
    for d, img in zip(dicts, imgs):
        e = d["entity_info"][0]
        starts = [p["start"] for p in e["phrases"]]
        assert starts == sorted(starts) and len(starts) == 3
        for p in e["phrases"]:
            assert e["sentence"][p["start"] : p["end"]] == p["phrase"]
        assert e["phrases"][1]["phrase"] == "the grass"

    d = dicts[0]
    tasks = [build_task("interleave"), build_task("interleave_retrieval")]
    out = _eval_mapper(tasks)(d)
    gt = out["find_gt"]["interleave_masks"]
    ids = _ids(d["pan_seg_file_name"])
    phrases = d["entity_info"][0]["phrases"]
    expect = torch.from_numpy(np.stack([ids == p["annotation_id"] for p in phrases]))
    assert gt.dtype == torch.bool and torch.equal(gt, expect) and gt.any((1, 2)).all()
    sample = out["find_samples"]["interleave"]
    assert torch.equal(sample["masks"], gt)
    # token -> entity: each entity's tokens are exactly the words of its phrase, or the one
    # [INTERACTIVE] token of a visual phrase
    feats, entity = sample["tokens"], sample["token_entity"]
    for k, (p, vis) in enumerate(zip(phrases, sample["is_visual"].tolist())):
        words = [feats.text[s:e] for (s, e), t in zip(feats.offsets.tolist(), entity) if t == k]
        assert words == (["[INTERACTIVE]"] if vis else p["phrase"].split())
        if vis:
            assert sample["prompts"][k].any() and not (sample["prompts"][k] & ~gt[k]).any()
    assert (entity >= 0).sum() == sum(
        1 if v else len(p["phrase"].split()) for p, v in zip(phrases, sample["is_visual"])
    )
    # official: the first sentence stands for each of the image's sentences
    retrieval = out["find_samples"]["interleave_retrieval"]["sentences"]
    assert [f.text for f in retrieval] == [d["entity_info"][0]["sentence"]] * 2

    # training split: images without a sentence are kept (dummy entity in the task)
    tpath = write_entities(val_info, "entity_train.json", images=1)
    assert len(DatasetCatalog.get(_register_entity(val_info, tpath, training=True))) == 3


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda a: a[1]["phrase"][0].update(annotation_id=77),
            r"annotations\[1\] \(image \d+\) "
            r"phrase\[0\] \('the grass'\): annotation_id 77 is not a panoptic segment",
        ),
        (
            lambda a: a[0]["phrase"][2].update(end_idx=500),
            r"annotations\[0\] \(image \d+\) "
            r"phrase\[2\] \('small \w+'\): span \(2, 500\) is outside the sentence",
        ),
        (
            lambda a: a[0]["phrase"][1].update(start_idx=-1),
            r"annotations\[0\] .*phrase\[1\].*outside",
        ),
        (
            lambda a: a[1].update(sentence_raw=a[1]["sentence_raw"].replace("]", "", 1)),
            r"annotations\[1\] \(image \d+\): malformed sentence_raw",
        ),
        (
            lambda a: a[0].update(sentence_raw="a small dog [x] stands"),
            r"annotations\[0\] .*malformed sentence_raw.*bracket that is not",
        ),
        (  # every id marked, but a stray bracket
            lambda a: a[0].update(sentence_raw=a[0]["sentence_raw"] + " ]"),
            r"annotations\[0\] .*malformed sentence_raw.*bracket that is not",
        ),
        (
            lambda a: a[0].update(sentence_raw=a[0]["sentence"]),
            r"annotations\[0\] .*malformed sentence_raw.*no '\[<id>\]' marker",
        ),
        (
            lambda a: a[0]["phrase"][0].update(start_idx=a[0]["phrase"][2]["start_idx"] + 1),
            r"annotations\[0\] .*overlap",
        ),
    ],
)
def test_entity_bad_input_names_file_and_entry(val_info, edit, match):
    path = write_entities(val_info, "entity_bad.json", edit=edit)
    with pytest.raises(ValueError, match=r"entity_bad\.json " + match):
        DatasetCatalog.get(_register_entity(val_info, path))


# ----------------------------------------------------------------------------- training


def test_training_mapper_yields_grounding_and_interleave_samples(tmp_path, train_info):
    write_refcoco(tmp_path, train_info)
    path = write_entities(train_info, "entity_train2017.json", images=3)
    entity = DatasetCatalog.get(_register_entity(train_info, path, training=True))
    refs = {d["image_id"]: d for d in DatasetCatalog.get(_register_refcoco(tmp_path, "val"))}
    classes = train_info["metadata"]["stuff_classes"]
    tasks = [build_task("grounding", class_names=classes), build_task("interleave")]
    mapper = mp.FINDPanopticLSJMapper(
        augmentations=mp.build_lsj_augmentations(64, 0.8, 1.2),
        image_format="RGB",
        tasks=tasks,
        encode_text=word_encoder,
        seed=0,
    )
    d = dict(entity[0], grounding_info=refs[entity[0]["image_id"]]["grounding_info"])
    seen_modes = set()
    for _ in range(3):
        out = mapper(d)
        g, il = out["find_samples"]["grounding"], out["find_samples"]["interleave"]
        inst = out["instances"].gt_masks
        assert g["masks"].shape[-2:] == (64, 64) and il["masks"].shape[-2:] == (64, 64)
        seen_modes.add(g["mode"])
        texts = [p.text for p in g["phrases"]]
        allowed = {s.lower() for r in d["grounding_info"] for s in r["sentences"]}
        assert g["mode"] == "text" and set(texts) <= allowed and 1 <= len(texts) <= 4
        # a ref's mask (RLE decoded, then transformed) is its panoptic segment's (PNG path)
        # one sentence per ref (official): no two queries carry the same (non-empty) ref mask
        full = [m for m in g["masks"] if m.any()]
        assert not any(torch.equal(a, b) for i, a in enumerate(full) for b in full[i + 1 :])
        query_text = [texts[q] for q in g["query_phrase"]]
        for m, t in zip(g["masks"], query_text):
            if t != "the box drawn as a polygon":
                assert any(torch.equal(m, x) for x in inst), t
        assert len(il["is_visual"]) == 3 and il["masks"].shape[0] == 3
        for m in il["masks"]:
            assert any(torch.equal(m, x) for x in inst) or not m.any()
        assert set(il["token_entity"][il["token_entity"] >= 0].tolist()) == {0, 1, 2}
    assert seen_modes == {"text"}

    # RefCOCO alone (no panoptic PNG): groundings only
    ref_only = refs[train_info["images"][1]["image_id"]]
    mapper = mp.FINDPanopticLSJMapper(
        augmentations=mp.build_lsj_augmentations(64, 0.8, 1.2),
        image_format="RGB",
        tasks=[build_task("grounding")],
        encode_text=word_encoder,
        seed=0,
    )
    out = mapper(ref_only)
    g = out["find_samples"]["grounding"]
    assert g["mode"] == "text" and g["masks"].shape[-2:] == (64, 64) and len(g["phrases"]) >= 1
    assert len(out["instances"]) == 0


def test_mapper_ground_truth_feeds_the_grounding_evaluator(tmp_path, train_info, val_info):
    from find_plugin.d2.evaluation.grounding import FINDGroundingEvaluator

    write_refcoco(tmp_path, train_info)
    ref = DatasetCatalog.get(_register_refcoco(tmp_path, "val"))[0]
    path = write_entities(val_info, "entity_val2017.json")
    ent = DatasetCatalog.get(_register_entity(val_info, path))[0]
    cases = [
        ("grounding", ref, [build_task("grounding")]),
        ("interleave", ent, [build_task("interleave")]),
    ]
    for task, d, tasks in cases:
        inp = _eval_mapper(tasks, [mp.FixedResizeShortestEdge(24, 1000)])(d)
        gt = inp["find_gt"][f"{task}_masks"]
        ev = FINDGroundingEvaluator(task=task, distributed=False)
        ev.reset()
        # the exact masks score 100; the first mask emptied loses it
        ev.process([inp], [{f"{task}_masks": gt.float() * 2 - 1}])
        assert ev.evaluate()[task]["mIoU"] == pytest.approx(100.0)
        worse = gt.float() * 2 - 1
        worse[0] = -1
        ev.reset()
        ev.process([inp], [{f"{task}_masks": worse}])
        assert ev.evaluate()[task]["mIoU"] == pytest.approx(100.0 * (len(gt) - 1) / len(gt))
