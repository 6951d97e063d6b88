"""Fixtures of the MMDetection-adapter tests: the demo dataset (tiny, real formats) and the
demo config shrunk for CPU seconds."""

import os
import pathlib

import pytest

from tests._util import load_module

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "projects" / "find_mmdet" / "configs"
DEMO_CONFIG = CONFIG_DIR / "find_lite0_minilm_find-demo.py"
FULL_CONFIG = CONFIG_DIR / "find_focalt_llama_8xb2-50e_coco-panoptic-caption.py"


def _load_tool(name):
    return load_module(f"_tool_{name}", ROOT / "tools" / f"{name}.py")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """``<tmp>/find_demo/``: 4 training and 10 validation images of the demo dataset (retrieval
    ranks a top-10, so at least 10)."""
    root = tmp_path_factory.mktemp("mmdet_demo")
    _load_tool("build_demo_dataset").build_demo_dataset(
        str(root), num_train=4, num_val=10, progress=False
    )
    return os.path.join(str(root), "find_demo") + "/"


def demo_cfg(data_root: str, work_dir: str = "", **options):
    """The demo config on ``data_root`` with CPU-test sizes (batch 2, no workers, no text
    cache, 2 iterations) and ``options`` (``--cfg-options`` style) on top."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(DEMO_CONFIG))
    base = {
        "train_dataloader.batch_size": 2,
        "train_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "val_dataloader.batch_size": 2,
        "val_dataloader.num_workers": 0,
        "val_dataloader.persistent_workers": False,
        "train_cfg.max_iters": 2,
        "train_cfg.val_interval": 2,
    }
    base.update(options)
    cfg.merge_from_dict(base)
    cfg.model.language.pop("cache_dir", None)
    cfg.model.criterion = dict(num_points=64, matcher_num_points=64)
    for ds in [cfg.train_dataloader.dataset] + val_sets(cfg):
        ds.data_root = data_root
        for t in ds.pipeline:
            if t["type"] == "FINDSampleTasks":
                t["language"].pop("cache_dir", None)
    cfg.test_dataloader = cfg.val_dataloader
    for group in cfg.val_evaluator.metrics:
        for m in group.metrics:
            if m["type"] == "CocoPanopticMetric":
                m.ann_file = data_root + "coco/annotations/panoptic_val2017.json"
                m.seg_prefix = data_root + "coco/panoptic_val2017/"
            elif m["type"] == "CocoMetric":
                m.ann_file = data_root + "coco/annotations/instances_val2017.json"
    cfg.test_evaluator = cfg.val_evaluator
    cfg.work_dir = work_dir
    return cfg


def val_sets(cfg) -> list:
    """The dataset configs of the config's validation sets (its FINDConcatDataset)."""
    ds = cfg.val_dataloader.dataset
    assert ds["type"] == "FINDConcatDataset", ds["type"]
    return list(ds.datasets)
