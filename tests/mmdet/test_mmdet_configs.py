"""The two FIND configs share their data pieces through _base_/find_data.py: both parse, their
pretty_text parses back to the same data settings, each validation set's pipeline runs only its
tasks; tools/mmdet_train.py prepares --launcher pytorch on a machine without CUDA."""

import pathlib

import pytest

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))

KEYS = ("train_dataloader", "val_dataloader", "val_evaluator", "model")


def _steps(ds):
    return [t["type"] for t in ds.pipeline]


def _tasks(ds):
    return [t for t in ds.pipeline if t["type"] == "FINDSampleTasks"][0]["tasks"]


@pytest.fixture(scope="module", params=[C.DEMO_CONFIG, C.FULL_CONFIG], ids=["demo", "coco"])
def parsed(request):
    from mmengine.config import Config

    return Config.fromfile(str(request.param))


def test_pretty_text_parses_back_to_the_same_data(parsed):
    from mmengine.config import Config

    again = Config.fromstring(parsed.pretty_text, ".py")
    for key in KEYS:
        assert again[key].to_dict() == parsed[key].to_dict(), key


def test_shared_pieces_come_from_the_base(parsed):
    from mmengine.config import Config

    base = Config.fromfile(str(C.CONFIG_DIR / "_base_" / "find_data.py"))
    train = parsed.train_dataloader.dataset.pipeline
    assert train[:3] == [base.load_image, base.load_panoptic, base.load_task_masks]
    assert train[-1] == base.pack_train
    for ds in parsed.val_dataloader.dataset.datasets:
        assert ds.pipeline[0] == base.load_image and ds.pipeline[-1] == base.pack_test
    assert parsed.train_dataloader.sampler == base.train_sampler
    assert parsed.val_dataloader.sampler == base.val_sampler


def test_coco_sets_run_their_own_tasks():
    from mmengine.config import Config

    cfg = Config.fromfile(str(C.FULL_CONFIG))
    sets = dict(zip(cfg.val_evaluator.dataset_prefixes, cfg.val_dataloader.dataset.datasets))
    assert _tasks(sets["coco_panoptic_val2017"]) == ["generic", "interactive", "retrieval"]
    assert _tasks(sets["refcocog_umd_val"]) == ["grounding"]
    assert "LoadPanopticAnnotations" not in _steps(sets["refcocog_umd_val"])
    for name in ("coco_entity_val2017", "coco_entity_val2017_long"):
        assert _tasks(sets[name]) == ["interleave", "interleave_retrieval"]
        assert sets[name].images_with == "entity_info"
    assert _tasks(sets["karpathy_test"]) == ["retrieval"]
    assert _steps(sets["karpathy_test"]) == [
        "LoadImageFromFile",
        "Resize",
        "FINDSampleTasks",
        "PackFINDInputs",
    ]
    metrics = [g.dataset_index for g in cfg.val_evaluator.metrics]
    assert metrics == list(range(len(sets)))
    refs = [m["type"] for m in cfg.val_evaluator.metrics[1].metrics]
    assert refs == ["FINDGroundingMetric", "RefSegMetric"]


def test_cpu_launcher_settings(tmp_path, demo_root, monkeypatch):
    train = C._load_tool("mmdet_train")
    monkeypatch.setattr(train, "_cuda", lambda: False)  # the settings of a machine without CUDA
    path = str(tmp_path / "demo.py")
    C.demo_cfg(demo_root).dump(path)
    cfg = train.build_cfg(train.parse_args([path, "--launcher", "pytorch"]))
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.find_unused_parameters is True  # the config's, kept
    assert "device_ids" not in train.build_cfg(train.parse_args([path])).model_wrapper_cfg
    with pytest.raises(ValueError, match="env_cfg.dist_cfg.backend='gloo'"):
        train.init_cpu_dist(cfg)  # the demo config's backend is nccl
