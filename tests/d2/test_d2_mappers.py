"""FIND's detectron2 mappers on the tiny real-format dataset (CPU, small images)."""

import pathlib
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data import transforms as T
from PIL import Image

from find_plugin.d2 import datasets as ds
from find_plugin.d2 import mappers as mp
from find_plugin.tasks import build_task, collate_samples
from tests._util import load_module as _load

_HERE = pathlib.Path(__file__).parent
tiny = _load("find_tiny_dataset", _HERE / "tiny_dataset.py")
word_encoder = _load("find_tasks_conftest", _HERE.parent / "tasks" / "conftest.py").word_encoder
TASKS = ("generic", "grounding", "interactive", "retrieval")


def _tasks(meta, names=TASKS):
    classes = meta["stuff_classes"]
    options = {"generic": {"class_names": classes}, "grounding": {"class_names": classes}}
    return [build_task(n, **options.get(n, {})) for n in names]


@pytest.fixture
def tiny_train(tmp_path):
    info = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=3, seed=0)
    name = f"tiny_{uuid.uuid4().hex[:8]}"
    ds.register_find_coco_panoptic(name, info["metadata"], **info["paths"])
    info["name"] = name
    info["dicts"] = DatasetCatalog.get(name)
    return info


def _lsj_mapper(info, seed=0, augmentations=None):
    return mp.FINDPanopticLSJMapper(
        augmentations=augmentations or mp.build_lsj_augmentations(64, 0.5, 1.5),
        image_format="RGB",
        tasks=_tasks(info["metadata"]),
        encode_text=word_encoder,
        seed=seed,
    )


def _png_masks(d, crowd=False):
    ids = ds.rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB")))
    segs = [s for s in d["segments_info"] if crowd or not s["iscrowd"]]
    return torch.from_numpy(np.stack([ids == s["id"] for s in segs]))


def _category_colors(info):
    return {
        info["metadata"]["stuff_dataset_id_to_contiguous_id"][c["id"]]: np.array(c["color"])
        for c in info["categories"]
    }


def test_flip_keeps_image_masks_and_prompts_aligned(tiny_train):
    d = tiny_train["dicts"][0]
    original = np.array(Image.open(d["file_name"]).convert("RGB"))
    masks = _png_masks(d)
    for prob, expect in ((1.0, lambda a: torch.flip(a, [-1])), (0.0, lambda a: a)):
        out = _lsj_mapper(tiny_train, augmentations=[mp.SeededRandomFlip(prob=prob)])(d)
        assert torch.equal(out["image"], expect(torch.from_numpy(original).permute(2, 0, 1)))
        assert torch.equal(out["instances"].gt_masks, expect(masks))
        spatial = out["find_samples"]["interactive"]
        for pos, m in zip(spatial["pos"], spatial["masks"]):
            assert pos.any() and not (pos & ~m).any()  # prompts drawn inside their own mask
    crowd = [s for s in d["segments_info"] if s["iscrowd"]]
    assert crowd and len(out["instances"]) == len(d["segments_info"]) - len(crowd)
    assert out["instances"].gt_classes.tolist() == [
        s["category_id"] for s in d["segments_info"] if not s["iscrowd"]
    ]


def test_lsj_masks_follow_the_image(tiny_train):
    """After scale, crop, pad and flip, each mask covers pixels of its category's colour (the
    tiny images paint segments with their category colour), and the padding is no segment."""
    colors = _category_colors(tiny_train)
    for seed in range(6):
        mapper = _lsj_mapper(tiny_train, seed=seed)
        for d in tiny_train["dicts"]:
            out = mapper(d)
            image = out["image"].permute(1, 2, 0).numpy().astype(float)
            inst = out["instances"]
            assert inst.gt_masks.shape[-2:] == (64, 64) == tuple(out["image"].shape[-2:])
            assert (inst.gt_masks.sum(0) <= 1).all()  # panoptic: no overlap
            for label, m in zip(inst.gt_classes.tolist(), inst.gt_masks):
                inner = torch.nn.functional.max_pool2d((~m)[None, None].float(), 5, 1, 2)[0, 0]
                inner = (m & (inner == 0)).numpy()
                if inner.sum() >= 4:
                    err = np.abs(image[inner].mean(0) - colors[label]).max()
                    assert err < 30, (seed, d["image_id"], label, err)
            covered = inst.gt_masks.any(0).numpy()
            grey = (np.abs(image - 128) < 1).all(-1)  # FixedSizeCrop's image padding
            assert not (covered & grey).any()
            assert (out["height"], out["width"]) == _size(d)


def _size(d):
    w, h = Image.open(d["file_name"]).size
    return h, w


def test_samples_for_each_task(tiny_train):
    out = _lsj_mapper(tiny_train)(tiny_train["dicts"][1])
    samples = out["find_samples"]
    assert set(samples) == set(TASKS)
    inst = out["instances"]
    assert torch.equal(samples["generic"]["labels"], inst.gt_classes)
    assert torch.equal(samples["generic"]["masks"], inst.gt_masks)
    assert samples["retrieval"]["captions"][0].text in tiny_train["dicts"][1]["captions"]
    for m in samples["interactive"]["masks"]:
        assert any(torch.equal(m, g) for g in inst.gt_masks)
    grounding = samples["grounding"]
    assert grounding["mode"] == "class" and len(grounding["masks"]) >= 1
    for m in grounding["masks"]:
        assert any(torch.equal(m, g) for g in inst.gt_masks)


def _flat(out):
    s = out["find_samples"]
    return [
        out["image"],
        out["instances"].gt_masks,
        s["interactive"]["pos"],
        s["generic"]["class_tokens"].features,
        s["retrieval"]["captions"][0].features,
    ]


def _same(a, b):
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(_flat(a), _flat(b)))


def test_determinism_under_seed_and_no_global_rng(tiny_train):
    d = tiny_train["dicts"][0]
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()
    a, b = _lsj_mapper(tiny_train, seed=0), _lsj_mapper(tiny_train, seed=0)
    first_a, first_b = a(d), b(d)
    assert _same(first_a, first_b)
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert not _same(first_a, a(d))  # the next call (epoch) draws anew
    assert not _same(first_a, _lsj_mapper(tiny_train, seed=1)(d))


def test_train_loader_yields_batches_the_model_side_collates(tiny_train):
    mapper = _lsj_mapper(tiny_train)
    loader = build_detection_train_loader(
        dataset=tiny_train["dicts"], mapper=mapper, total_batch_size=2, num_workers=0
    )
    batch = next(iter(loader))
    assert len(batch) == 2 and all(b["image"].shape == (3, 64, 64) for b in batch)
    tasks = mapper.tasks
    collated = collate_samples(
        tasks,
        [b["find_samples"] for b in batch],
        project=lambda x: x,
        padded_size=(64, 64),
        training=True,
    )
    assert set(collated.inputs) == {"class", "grounding", "spatial", "retrieval"}
    assert all(t["masks"].shape[-2:] == (64, 64) for t in collated.targets)


def _eval_mapper(info, names=("generic", "interactive", "retrieval"), cls=None, seed=0):
    return (cls or mp.FINDEvalMapper)(
        augmentations=[mp.FixedResizeShortestEdge(32, 1333)],
        image_format="BGR",
        tasks=_tasks(info["metadata"], names),
        encode_text=word_encoder,
        seed=seed,
    )


def test_eval_mapper_resizes_and_gives_ground_truth_at_original_size(tiny_train):
    d = tiny_train["dicts"][1]
    np_state = np.random.get_state()[1].copy()
    out = _eval_mapper(tiny_train)(d)
    assert (np.random.get_state()[1] == np_state).all()
    h, w = _size(d)
    assert (out["height"], out["width"]) == (h, w)
    assert tuple(out["image"].shape[-2:]) == T.ResizeShortestEdge.get_output_shape(h, w, 32, 1333)
    bgr = np.asarray(Image.open(d["file_name"]).convert("RGB"))[..., ::-1]
    assert np.abs(out["image"].float().mean((1, 2)).numpy() - bgr.mean((0, 1))).max() < 3
    gt = out["find_gt"]
    assert torch.equal(gt["interactive_masks"], _png_masks(d))
    assert gt["captions"] == d["captions"]
    spatial = out["find_samples"]["interactive"]
    assert len(spatial["pos"]) == len(gt["interactive_masks"])
    for pos, m in zip(spatial["pos"], spatial["masks"]):  # first click: a 3x3 square in m
        assert 1 <= pos.sum() <= 9 and (pos & m).any()
    assert len(out["find_samples"]["retrieval"]["captions"]) == len(d["captions"])
    again = _eval_mapper(tiny_train)(d)
    assert torch.equal(again["image"], out["image"])
    assert torch.equal(again["find_samples"]["interactive"]["pos"], spatial["pos"])
    assert "instances" not in out


def test_retrieval_eval_mapper_on_karpathy(tmp_path):
    info = tiny.write_tiny_coco(tmp_path, split="val2017", num_images=2)
    tiny.write_tiny_karpathy(tmp_path, [info])
    name = f"tiny_k_{uuid.uuid4().hex[:8]}"
    ds.register_find_karpathy(name, **ds.karpathy_paths(str(tmp_path)))
    d = DatasetCatalog.get(name)[0]
    mapper = _eval_mapper(info, ("retrieval",), cls=mp.FINDRetrievalEvalMapper)
    out = mapper(d)
    assert out["find_gt"] == {"captions": d["captions"]}
    assert [t.text for t in out["find_samples"]["retrieval"]["captions"]] == d["captions"]
    with pytest.raises(ValueError, match=f"image {d['image_id']} .*no captions"):
        mapper(dict(d, captions=[]))


def test_bad_panoptic_input_names_file_and_entry(tiny_train):
    d = dict(tiny_train["dicts"][0])
    seg = dict(d["segments_info"][0], id=4242)
    bad = dict(d, segments_info=d["segments_info"] + [seg])
    for mapper in (_lsj_mapper(tiny_train), _eval_mapper(tiny_train)):
        with pytest.raises(
            ValueError, match=rf"{d['pan_seg_file_name']}.*\[4242\].*{d['image_id']}"
        ):
            mapper(bad)
    missing = dict(d, pan_seg_file_name=d["pan_seg_file_name"] + ".gone")
    for mapper in (_lsj_mapper(tiny_train), _eval_mapper(tiny_train)):
        with pytest.raises(FileNotFoundError, match=rf"\.png\.gone.*image {d['image_id']}"):
            mapper(missing)


def _cfg(train_name, tasks=TASKS):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "find_panoptic_lsj"
    cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = 64, 0.5, 1.5
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 32, 1333
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.MODEL.FIND = CN({"TASKS": CN({"TRAIN": list(tasks)}), "TEST": CN({"SEED": 7})})
    return cfg


def test_build_find_mapper_from_config(tiny_train, monkeypatch):
    """from_config wiring, with the task registry and text encoder replaced by the task layer's
    ``build_task`` and the word encoder (the real ones are the model side's)."""
    built = []

    def fake_task(name, cfg, metadata):
        built.append((name, metadata.name))
        return _tasks(tiny_train["metadata"], [name])[0]

    monkeypatch.setattr(mp.registry, "_build_task", fake_task)
    monkeypatch.setattr(mp.registry, "_build_text_encoder", lambda cfg: word_encoder)
    name = tiny_train["name"]
    train = mp.build_find_mapper(_cfg(name), True)
    assert isinstance(train, mp.FINDPanopticLSJMapper) and train.seed == 0
    assert built == [(t, name) for t in TASKS]
    assert train(tiny_train["dicts"][0])["image"].shape == (3, 64, 64)
    test = mp.build_find_mapper(_cfg(name), False, name)
    assert isinstance(test, mp.FINDEvalMapper) and test.seed == 7
    assert test.task_names == ["generic"]
    with pytest.raises(ValueError, match=r"TASKS.TRAIN lists \['interleave'\]"):
        mp.build_find_mapper(_cfg(name, TASKS + ("interleave",)), True)
    cfg = _cfg(name)
    cfg.INPUT.DATASET_MAPPER_NAME = "nope"
    with pytest.raises(KeyError, match="unknown FIND dataset mapper 'nope'"):
        mp.build_find_mapper(cfg, True)
    assert {"find_panoptic_lsj", "find_panoptic_eval", "find_retrieval_eval"} <= set(
        mp.FIND_MAPPER_REGISTRY.names()
    )
