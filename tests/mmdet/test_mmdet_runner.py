"""mmengine's Runner trains and validates FIND through tools/mmdet_train.py; mmdet_test.py
evaluates the saved checkpoint; resuming continues the run; configs fail clearly."""

import json
import os
import pathlib

import pytest
import torch

from tests._util import load_module

C = load_module("_mmdet_conftest", pathlib.Path(__file__).with_name("conftest.py"))


def _write_cfg(cfg, path) -> str:
    cfg.dump(str(path))
    return str(path)


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """2 iterations (batch 2) + the validation pass, through tools/mmdet_train.py."""
    work = tmp_path_factory.mktemp("mmdet_work")
    cfg_path = _write_cfg(C.demo_cfg(demo_root), work / "demo.py")
    train = C._load_tool("mmdet_train")
    runner = train.main([cfg_path, "--work-dir", str(work)])
    return work, cfg_path, runner


def _metrics(work) -> dict:
    scalars = sorted(pathlib.Path(work).glob("*/vis_data/scalars.json"))
    assert scalars, f"no scalars.json under {work}"
    rows = [json.loads(line) for line in scalars[-1].read_text().splitlines()]
    return {k: v for r in rows for k, v in r.items()}


def test_train_and_validate(trained):
    work, _, runner = trained
    assert runner.iter == 2
    logged = _metrics(work)
    assert "loss_spatial_bce" in logged and "loss_retrieval_decoder" in logged
    assert "loss_grounding_bce" in logged and "loss_interleave_bce" in logged
    for key in (
        "coco_panoptic/PQ",
        "sem_seg/mIoU",
        "coco/segm_mAP",
        "interactive/noc@0.5",
        "retrieval/ir1",
        "retrieval/tr1",
        "grounding/cIoU",
        "grounding/precision@0.5",
        "interleave/cIoU",
        "interleave/mIoU",
        "interleave_retrieval/ir1",
        "interleave_retrieval/tr1",
    ):
        assert "find_demo_val/" + key in logged, (key, sorted(logged))
    # the second validation set, find_demo_karpathy_test, runs retrieval only
    karpathy = sorted(k for k in logged if k.startswith("find_demo_karpathy_test/"))
    assert karpathy and all(k.startswith("find_demo_karpathy_test/retrieval/") for k in karpathy)
    assert "find_demo_karpathy_test/retrieval/ir1" in karpathy
    assert os.path.isfile(os.path.join(work, "iter_2.pth"))


def test_mmdet_test_reads_the_checkpoint(trained):
    work, cfg_path, _ = trained
    ckpt = os.path.join(work, "iter_2.pth")
    test = C._load_tool("mmdet_test")
    metrics = test.main([cfg_path, ckpt, "--work-dir", str(work / "test")])
    assert "find_demo_val/coco_panoptic/PQ" in metrics
    assert "find_demo_karpathy_test/retrieval/irtr" in metrics
    # a checkpoint whose keys do not fit fails, naming the keys (strict load)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["state_dict"].pop("interface.logit_scale")
    broken = str(work / "broken.pth")
    torch.save(state, broken)
    with pytest.raises(Exception, match="interface.logit_scale"):
        test.main([cfg_path, broken, "--work-dir", str(work / "test2")])


def test_resume_continues(trained, demo_root):
    work, cfg_path, _ = trained
    train = C._load_tool("mmdet_train")
    runner = train.main(
        [
            cfg_path,
            "--work-dir",
            str(work),
            "--resume",
            "--cfg-options",
            "train_cfg.max_iters=3",
            "train_cfg.val_interval=100",
        ]
    )
    assert runner.iter == 3  # started from iteration 2 of the saved run


def test_missing_custom_imports_says_to_add_it(demo_root, tmp_path):
    cfg = C.demo_cfg(demo_root)
    cfg.pop("custom_imports")
    path = _write_cfg(cfg, tmp_path / "no_imports.py")
    train = C._load_tool("mmdet_train")
    with pytest.raises(KeyError, match=r"custom_imports = dict\(imports=\['find_plugin.mmdet'\]"):
        train.main([path, "--work-dir", str(tmp_path)])


def test_unknown_task_fails_at_build_listing_tasks(demo_root):
    from mmdet.registry import MODELS

    import find_plugin.mmdet  # noqa: F401

    cfg = C.demo_cfg(demo_root)
    cfg.model.tasks["segment_anything"] = {}
    with pytest.raises(KeyError, match=r"unknown FIND task 'segment_anything'.*'generic'"):
        MODELS.build(cfg.model)


def test_amp_and_resume_flags(demo_root, tmp_path):
    """--amp swaps in mmengine's AmpOptimWrapper (dynamic loss scale; it needs CUDA to run),
    --resume without a path resumes from the work dir's latest checkpoint."""
    path = _write_cfg(C.demo_cfg(demo_root), tmp_path / "demo.py")
    train = C._load_tool("mmdet_train")
    cfg = train.build_cfg(train.parse_args([path, "--amp", "--resume"]))
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    assert cfg.resume is True and cfg.load_from is None
    plain = train.build_cfg(train.parse_args([path]))
    assert plain.optim_wrapper.type == "OptimWrapper" and not plain.get("resume", False)
