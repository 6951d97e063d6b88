"""detectron2 FIND evaluators: hand-computed values on synthetic outputs, streamed retrieval
against a full score matrix, state gathering across (simulated and real) ranks, errors, and the
evaluator registry / dispatch."""

import json
import logging
import math
import os
import time

import pytest
import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    inference_on_dataset,
)
from detectron2.utils import comm

from find_plugin.d2.evaluation import (
    FIND_EVALUATOR_REGISTRY,
    FINDGroundingEvaluator,
    FINDInteractiveEvaluator,
    FINDRetrievalEvaluator,
    build_find_evaluator,
)

# ----------------------------------------------------------------------------------- grounding


def _grounding_data(key="grounding_masks"):
    """Two images, 2x3 masks. Per mask (I, U): (1, 2), (0, 0), (5, 6)."""
    gt_a = torch.tensor([[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    # A logit of exactly 0 is background (strict >): the (0, 1) pixel is not predicted.
    pred_a = torch.tensor(
        [[[2.0, 0.0, -1.0], [-3.0, -1.0, -1.0]], [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]]
    )
    gt_b = torch.ones(1, 2, 3, dtype=torch.bool)
    pred_b = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, -0.5]]])
    inputs = [
        {"image_id": 1, "file_name": "a.jpg", "find_gt": {key: gt_a}},
        {"image_id": 2, "file_name": "b.jpg", "find_gt": {key: gt_b}},
    ]
    outputs = [{key: pred_a}, {key: pred_b}]
    return inputs, outputs


@pytest.mark.parametrize(
    "task,key", [("grounding", "grounding_masks"), ("interleave", "interleave_masks")]
)
def test_grounding_hand_computed(task, key):
    inputs, outputs = _grounding_data(key)
    ev = FINDGroundingEvaluator("synthetic", task=task)
    ev.reset()
    ev.process(inputs[:1], outputs[:1])
    ev.process(inputs[1:], outputs[1:])
    res = ev.evaluate()
    assert list(res) == [task]
    r = res[task]
    assert r["cIoU"] == pytest.approx(100.0 * 6 / 8)  # sum I / sum U = (1 + 0 + 5) / (2 + 0 + 6)
    assert r["cIoU_exact"] == pytest.approx(75.0)
    # IoUs 1/2 (minus the float32-surviving epsilon), 0 (empty GT counts), 5/6.
    assert r["mIoU"] == pytest.approx(100.0 * (0.5 + 0 + 5 / 6) / 3, rel=1e-5)
    assert r["mIoU_exact"] == pytest.approx(100.0 * (0.5 + 0 + 5 / 6) / 3)
    # Official: 1 / (2 + 1e-6) < 0.5 fails precision@0.5; the exact comparison passes it.
    assert r["precision@0.5"] == pytest.approx(100.0 / 3)
    assert r["precision@0.5_exact"] == pytest.approx(200.0 / 3)
    for t in (0.6, 0.7, 0.8):
        assert r[f"precision@{t}"] == pytest.approx(100.0 / 3)
        assert r[f"precision@{t}_exact"] == pytest.approx(100.0 / 3)
    assert r["precision@0.9"] == 0.0 and r["precision@0.9_exact"] == 0.0


def test_grounding_image_without_phrases_adds_nothing():
    inputs, outputs = _grounding_data()
    empty = torch.zeros(0, 4, 5)
    ev = FINDGroundingEvaluator()
    ev.process(
        inputs + [{"image_id": 3, "find_gt": {"grounding_masks": empty.bool()}}],
        outputs + [{"grounding_masks": empty}],
    )
    assert ev.evaluate()["grounding"]["cIoU"] == pytest.approx(75.0)


# --------------------------------------------------------------------------------- interactive


def _interactive_data():
    ious_a = torch.tensor([[0.3, 0.6, 0.95], [0.85, 0.9, 0.9]])
    ious_b = torch.tensor([[0.1, 0.2, 0.4]])
    inputs = [{"image_id": 7}, {"image_id": 8}]
    outputs = [{"interactive_ious": ious_a}, {"interactive_ious": ious_b}]
    return inputs, outputs


def test_interactive_hand_computed():
    inputs, outputs = _interactive_data()
    ev = FINDInteractiveEvaluator("synthetic", max_clicks=3)
    ev.process(inputs, outputs)
    r = ev.evaluate()["interactive"]
    # first click reaching the threshold, else max_clicks = 3 (0.85 >= 0.85 in float32 passes)
    assert r["noc@0.5"] == pytest.approx((2 + 1 + 3) / 3)
    assert r["noc@0.8"] == pytest.approx((3 + 1 + 3) / 3)
    assert r["noc@0.85"] == pytest.approx((3 + 1 + 3) / 3)
    assert r["noc@0.9"] == pytest.approx((3 + 2 + 3) / 3)
    assert r["miou@iter1"] == pytest.approx((0.3 + 0.85 + 0.1) / 3, rel=1e-6)
    assert r["miou@iter2"] == pytest.approx((0.6 + 0.9 + 0.2) / 3, rel=1e-6)
    assert r["miou@iter3"] == pytest.approx((0.95 + 0.9 + 0.4) / 3, rel=1e-6)
    assert set(r) == {"noc@0.5", "noc@0.8", "noc@0.85", "noc@0.9"} | {
        f"miou@iter{k}" for k in (1, 2, 3)
    }


# ----------------------------------------------------------------------------------- retrieval


def _hand_retrieval_data(key="caption_embeddings"):
    """12 one-hot images e_i with string ids. Images 0..7: one caption e_i (found at rank 1 both
    ways). Images 8, 9: two captions e_i + 2 e_{i+1} each (rank 2 both ways, except image 8 ->
    text, found at rank 1). Images 10, 11: no caption (image 10's e_10 ranks image 9's captions
    first)."""
    eye = torch.eye(12)
    inputs, outputs = [], []
    for i in range(12):
        if i < 8:
            caps = eye[i : i + 1]
        elif i < 10:
            caps = (eye[i] + 2 * eye[i + 1]).repeat(2, 1)
        else:
            caps = torch.zeros(0, 12)
        inputs.append({"image_id": f"img-{i:02d}"})
        outputs.append({"image_embedding": eye[i], key: caps})
    return inputs, outputs


@pytest.mark.parametrize("chunks", [(1, 1), (3, 5), (1024, 4096)])
def test_retrieval_hand_computed(chunks):
    inputs, outputs = _hand_retrieval_data()
    ev = FINDRetrievalEvaluator("synthetic", query_chunk=chunks[0], gallery_chunk=chunks[1])
    for i in range(0, 12, 5):
        ev.process(inputs[i : i + 5], outputs[i : i + 5])
    r = ev.evaluate()["retrieval"]
    expected = {
        "ir1": round(100 * 8 / 12, 3),  # 12 captions, 8 at rank 1
        "ir5": 100.0,
        "ir10": 100.0,
        "tr1": 75.0,  # 12 images: 0..8 at rank 1
        "tr5": round(100 * 10 / 12, 3),  # + image 9; images 10, 11 have no caption
        "tr10": round(100 * 10 / 12, 3),
        "irtr": round(100 * (8 / 12 + 0.75), 3),
    }
    assert r == pytest.approx(expected, abs=1e-3)


def test_interleave_retrieval_reads_interleave_embeddings():
    inputs, outputs = _hand_retrieval_data("interleave_embeddings")
    ev = FINDRetrievalEvaluator(task="interleave_retrieval")
    ev.process(inputs, outputs)
    res = ev.evaluate()
    assert list(res) == ["interleave_retrieval"]
    assert res["interleave_retrieval"]["tr1"] == 75.0
    assert res["interleave_retrieval"]["ir1"] == pytest.approx(66.667)


def _random_retrieval_data(n=23, dim=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randperm(1000, generator=g)[:n] + 5).tolist()  # arbitrary int ids
    inputs, outputs = [], []
    for i in range(n):
        m = int(torch.randint(0, 4, (1,), generator=g))
        inputs.append({"image_id": ids[i]})
        outputs.append(
            {
                "image_embedding": torch.randn(dim, generator=g),
                "caption_embeddings": torch.randn(m, dim, generator=g),
            }
        )
    return inputs, outputs


def _full_matrix_recall(inputs, outputs):
    """Reference: the whole [images x captions] cosine matrix, sorted per row."""
    img = torch.stack([o["image_embedding"] for o in outputs])
    txt = torch.cat([o["caption_embeddings"] for o in outputs])
    iid = torch.tensor([x["image_id"] for x in inputs])
    tid = torch.cat(
        [
            torch.full((o["caption_embeddings"].shape[0],), x["image_id"])
            for x, o in zip(inputs, outputs)
        ]
    )
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    scores = img @ txt.T
    t_rank = scores.argsort(dim=1, descending=True)  # image -> captions
    i_rank = scores.T.argsort(dim=1, descending=True)  # caption -> images
    out, raw = {}, {}
    for k in (1, 5, 10):
        raw[f"tr{k}"] = (tid[t_rank[:, :k]] == iid[:, None]).any(1).float().mean()
        raw[f"ir{k}"] = (iid[i_rank[:, :k]] == tid[:, None]).any(1).float().mean()
        out[f"tr{k}"], out[f"ir{k}"] = (round(raw[n].item() * 100, 3) for n in (f"tr{k}", f"ir{k}"))
    out["irtr"] = round((raw["ir1"] + raw["tr1"]).item() * 100, 3)
    return out


def test_retrieval_streamed_equals_full_matrix():
    inputs, outputs = _random_retrieval_data()
    ref = _full_matrix_recall(inputs, outputs)
    assert 0 < ref["ir1"] < 100 and 0 < ref["tr5"] < 100  # a non-trivial ranking
    for chunks in ((2, 5), (7, 3), (1000, 1000)):
        ev = FINDRetrievalEvaluator(query_chunk=chunks[0], gallery_chunk=chunks[1])
        for i in range(0, len(inputs), 4):
            ev.process(inputs[i : i + 4], outputs[i : i + 4])
        assert ev.evaluate()["retrieval"] == pytest.approx(ref, abs=1e-9), chunks


# ------------------------------------------------------------------------- multi-process merge


def _cases():
    """(evaluator factory, inputs, outputs) per evaluator."""
    g_in, g_out = _grounding_data()
    g_in2 = [dict(x, image_id=x["image_id"] + 10) for x in g_in]
    i_in, i_out = _interactive_data()
    r_in, r_out = _random_retrieval_data()
    return {
        "grounding": (lambda: FINDGroundingEvaluator(), g_in + g_in2[::-1], g_out + g_out[::-1]),
        "interactive": (lambda: FINDInteractiveEvaluator(max_clicks=3), i_in * 2, i_out * 2),
        "retrieval": (lambda: FINDRetrievalEvaluator(query_chunk=3, gallery_chunk=4), r_in, r_out),
    }


@pytest.mark.parametrize("name", ["grounding", "interactive", "retrieval"])
def test_two_simulated_ranks_merge_states(name, monkeypatch, caplog):
    make, inputs, outputs = _cases()[name]
    one = make()
    one.process(inputs, outputs)
    expected = one.evaluate()

    half = len(inputs) // 2
    rank0, rank1 = make(), make()
    rank0.process(inputs[:half], outputs[:half])
    rank1.process(inputs[half:], outputs[half:])
    sent = []

    def fake_gather(data, dst=0, group=None):
        sent.append(data)
        return [data, rank1._payload()]  # rank 0's own state first

    monkeypatch.setattr(comm, "gather", fake_gather)
    got = rank0.evaluate()
    assert len(sent) == 1
    assert got == expected
    assert set(got[name]) == set(expected[name]) and len(got[name]) >= 6

    # Another rank sends its state and returns {} (without a "no predictions" warning).
    monkeypatch.setattr(comm, "gather", lambda data, dst=0, group=None: [])
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert rank1.evaluate() == {}
    assert not caplog.records


def test_retrieval_ids_are_global_across_ranks(monkeypatch):
    """Each rank codes its image ids locally; rank 0 maps them back to the dataset's ids, so a
    caption of rank 1 matches its own image and not the image at the same local position, and an
    image id seen on both ranks names one image (ids decide hits, as in the official code)."""
    inputs, outputs = _random_retrieval_data(n=30, dim=4, seed=5)
    dup = 13  # also evaluated by rank 1 (a repeated id), as one evaluator fed it twice
    one = FINDRetrievalEvaluator()
    one.process(inputs + inputs[dup : dup + 1], outputs + outputs[dup : dup + 1])
    expected = one.evaluate()
    rank0, rank1 = FINDRetrievalEvaluator(), FINDRetrievalEvaluator()
    rank0.process(inputs[dup:], outputs[dup:])  # both ranks use local codes 0, 1, ...
    rank1.process(inputs[:dup] + inputs[dup : dup + 1], outputs[:dup] + outputs[dup : dup + 1])
    monkeypatch.setattr(comm, "gather", lambda data, dst=0, group=None: [data, rank1._payload()])
    got = rank0.evaluate()
    assert got["retrieval"] == pytest.approx(expected["retrieval"], abs=1e-9)
    one_each = FINDRetrievalEvaluator()
    one_each.process(inputs, outputs)
    monkeypatch.undo()
    assert got != one_each.evaluate()  # the repeated image changes the numbers


def _dist_worker(out_dir):
    """One rank of a real gloo run: evaluate this rank's shard, rank 0 writes the results."""
    results = {}
    rank, world = comm.get_rank(), comm.get_world_size()
    for name, (make, inputs, outputs) in _cases().items():
        n = len(inputs)
        lo, hi = rank * n // world, (rank + 1) * n // world  # contiguous, as InferenceSampler
        ev = make()
        ev.process(inputs[lo:hi], outputs[lo:hi])
        results.update(ev.evaluate())
    if rank == 0:
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f)
    else:
        assert results == {}


def test_two_process_gloo_gather(tmp_path):
    from detectron2.engine import launch

    start = time.time()
    launch(_dist_worker, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path),))
    elapsed = time.time() - start
    with open(tmp_path / "results.json") as f:
        got = json.load(f)
    expected = {}
    for make, inputs, outputs in _cases().values():
        ev = make()
        ev.process(inputs, outputs)
        expected.update(ev.evaluate())
    assert set(got) == {"grounding", "interactive", "retrieval"}
    assert got == expected
    assert elapsed < 120, f"2-process gloo run took {elapsed:.0f} s"


# ------------------------------------------------------------------------------- errors, JSON


def test_missing_output_key_names_key_and_image():
    inputs, outputs = _grounding_data()
    with pytest.raises(KeyError) as e:
        FINDGroundingEvaluator().process(inputs, [outputs[0], {"sem_seg": None}])
    assert "grounding_masks" in str(e.value) and "image_id 2" in str(e.value)
    with pytest.raises(KeyError) as e:
        FINDGroundingEvaluator(task="interleave").process(inputs, outputs)
    assert "interleave_masks" in str(e.value) and "image_id 1" in str(e.value)

    with pytest.raises(KeyError) as e:
        FINDGroundingEvaluator().process([{"image_id": 4}], outputs[:1])
    assert "find_gt" in str(e.value) and "grounding_masks" in str(e.value)
    assert "image_id 4" in str(e.value)

    with pytest.raises(KeyError) as e:
        FINDGroundingEvaluator().process([{"file_name": "x.jpg"}], outputs[:1])
    assert "'image_id'" in str(e.value)

    with pytest.raises(KeyError) as e:
        FINDInteractiveEvaluator().process([{"image_id": 9}], [{}])
    assert "interactive_ious" in str(e.value) and "image_id 9" in str(e.value)

    r_in, r_out = _hand_retrieval_data()
    with pytest.raises(KeyError) as e:
        FINDRetrievalEvaluator().process(r_in[:1], [{"caption_embeddings": torch.ones(1, 12)}])
    assert "image_embedding" in str(e.value) and "img-00" in str(e.value)
    with pytest.raises(KeyError) as e:
        FINDRetrievalEvaluator(task="interleave_retrieval").process(r_in[:1], r_out[:1])
    assert "interleave_embeddings" in str(e.value) and "img-00" in str(e.value)


def test_bad_shapes_and_task_names():
    inputs, outputs = _grounding_data()
    with pytest.raises(ValueError, match="image_id 1"):
        FINDGroundingEvaluator().process(inputs[:1], [{"grounding_masks": torch.zeros(2, 2, 2)}])
    with pytest.raises(ValueError, match=r"max_clicks=2.*\(1, 3\)"):
        FINDInteractiveEvaluator(max_clicks=2).process(
            [{"image_id": 1}], [{"interactive_ious": torch.zeros(1, 3)}]
        )
    with pytest.raises(ValueError, match="image_embedding"):
        FINDRetrievalEvaluator().process(
            [{"image_id": 1}],
            [{"image_embedding": torch.ones(4), "caption_embeddings": torch.ones(1, 5)}],
        )
    with pytest.raises(ValueError, match="task must be one of"):
        FINDGroundingEvaluator(task="retrieval")


def test_no_images_returns_empty():
    assert FINDGroundingEvaluator().evaluate() == {}
    assert FINDRetrievalEvaluator().evaluate() == {}


def test_output_dir_json_is_written_atomically(tmp_path):
    inputs, outputs = _interactive_data()
    ev = FINDInteractiveEvaluator(max_clicks=3, output_dir=str(tmp_path / "eval"))
    ev.process(inputs, outputs)
    res = ev.evaluate()
    assert os.listdir(tmp_path / "eval") == ["find_interactive_metrics.json"]  # no temp file left
    with open(tmp_path / "eval" / "find_interactive_metrics.json") as f:
        assert json.load(f) == res


# ------------------------------------------------------------------------ registry and dispatch


@pytest.fixture
def dataset(request):
    """A unique dataset name; its catalog entries are removed afterwards."""
    name = f"find_eval_test_{request.node.name}"
    yield name
    MetadataCatalog.remove(name)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)


def _evaluators(ev):
    return list(ev._evaluators) if isinstance(ev, DatasetEvaluators) else [ev]


def test_registry_names():
    assert sorted(k for k, _ in FIND_EVALUATOR_REGISTRY) == [
        "FINDGroundingEvaluator",
        "FINDInteractiveEvaluator",
        "FINDInterleaveRetrievalEvaluator",
        "FINDRetrievalEvaluator",
    ]


def test_dispatch_on_find_eval_tasks(dataset):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.FIND = CN({"TEST": CN({"INTERACTIVE_MAX_CLICKS": 4})})
    MetadataCatalog.get(dataset).set(
        find_eval_tasks=("grounding", "interleave", "interactive", "retrieval")
    )
    evs = _evaluators(build_find_evaluator(cfg, dataset, None))
    flat = [e for x in evs for e in _evaluators(x)]
    assert [(type(e).__name__, e.task) for e in flat] == [
        ("FINDGroundingEvaluator", "grounding"),
        ("FINDGroundingEvaluator", "interleave"),
        ("FINDInteractiveEvaluator", "interactive"),
        ("FINDRetrievalEvaluator", "retrieval"),
    ]
    assert flat[2].max_clicks == 4 and flat[3].device == "cpu"


def test_dispatch_on_evaluator_type_and_errors(dataset):
    cfg = get_cfg()
    MetadataCatalog.get(dataset).set(evaluator_type="FINDInteractiveEvaluator")
    ev = build_find_evaluator(cfg, dataset, None)
    assert isinstance(ev, FINDInteractiveEvaluator) and ev.max_clicks == 1

    MetadataCatalog.remove(dataset)
    MetadataCatalog.get(dataset).set(evaluator_type="lvis")
    with pytest.raises(ValueError, match="find_eval_tasks.*evaluator_type"):
        build_find_evaluator(cfg, dataset, None)
    MetadataCatalog.get(dataset).set(find_eval_tasks=("grounding", "captioning"))
    with pytest.raises(KeyError, match="'captioning'"):
        build_find_evaluator(cfg, dataset, None)


def test_generic_gives_detectron2_evaluators(dataset, tmp_path):
    coco_json = tmp_path / "instances.json"
    coco_json.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
                "annotations": [],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    DatasetCatalog.register(
        dataset,
        lambda: [{"file_name": "a.jpg", "sem_seg_file_name": "a.png", "image_id": 1}],
    )
    meta = dict(
        evaluator_type="coco_panoptic_seg",
        panoptic_json=str(tmp_path / "panoptic.json"),
        panoptic_root=str(tmp_path / "panoptic"),
        thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_classes=["thing", "stuff"],
        ignore_label=255,
        json_file=str(coco_json),
    )
    MetadataCatalog.get(dataset).set(find_eval_tasks=("generic", "retrieval"), **meta)
    cfg = get_cfg()
    evs = _evaluators(build_find_evaluator(cfg, dataset, str(tmp_path)))
    assert [type(e) for e in evs] == [
        COCOPanopticEvaluator,
        COCOEvaluator,
        SemSegEvaluator,
        FINDRetrievalEvaluator,
    ]
    cfg.MODEL.FIND = CN({"TEST": CN({"INSTANCE_ON": False, "SEMANTIC_ON": True})})
    evs = _evaluators(build_find_evaluator(cfg, dataset, str(tmp_path)))
    assert [type(e) for e in evs] == [
        COCOPanopticEvaluator,
        SemSegEvaluator,
        FINDRetrievalEvaluator,
    ]

    MetadataCatalog.remove(dataset)
    meta.pop("panoptic_root")
    MetadataCatalog.get(dataset).set(find_eval_tasks=("generic",), **meta)
    with pytest.raises(
        KeyError, match="COCOPanopticEvaluator needs metadata \\['panoptic_root'\\]"
    ):
        build_find_evaluator(cfg, dataset, str(tmp_path))


def test_inference_on_dataset_end_to_end(dataset):
    """The built evaluator under detectron2's inference_on_dataset with a stand-in model."""
    g_in, g_out = _grounding_data()
    i_in, i_out = _interactive_data()
    inputs = [dict(a, **b) for a, b in zip(g_in, i_in)]
    outputs = {id(x): dict(a, **b) for x, a, b in zip(inputs, g_out, i_out)}
    MetadataCatalog.get(dataset).set(find_eval_tasks=("grounding", "interactive"))
    cfg = get_cfg()
    cfg.MODEL.FIND = CN({"TEST": CN({"INTERACTIVE_MAX_CLICKS": 3})})
    evaluator = build_find_evaluator(cfg, dataset, None)

    class Model(torch.nn.Module):
        def forward(self, batch):
            return [outputs[id(x)] for x in batch]

    res = inference_on_dataset(Model(), [[x] for x in inputs], evaluator)
    assert set(res) == {"grounding", "interactive"}
    assert res["grounding"]["cIoU"] == pytest.approx(75.0)
    assert res["interactive"]["noc@0.5"] == pytest.approx(2.0)
    assert not math.isnan(res["interactive"]["miou@iter1"])
