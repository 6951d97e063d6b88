"""Every detectron2 config of ``configs/`` (evaluation-only ones under ``configs/eval/``
included) loads with ``add_find_config`` and names registered datasets with a FIND evaluation."""

import pathlib

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import find_plugin.d2  # noqa: F401  (registration)
from find_plugin.d2 import add_find_config
from find_plugin.d2.task_registry import FIND_TASK_REGISTRY

CONFIGS = sorted((pathlib.Path(__file__).parents[2] / "configs").rglob("*.yaml"))
EVAL = [p for p in CONFIGS if p.parent.name == "eval"]


def _load(path):
    cfg = get_cfg()
    add_find_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def test_there_are_eval_configs_for_each_benchmark():
    names = {p.stem for p in EVAL}
    assert {
        "refcocog_umd_val",
        "coco_entity_val2017",
        "coco_entity_val2017_long",
        "coco_interleave_val2017",
        "karpathy_test",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_and_names_registered_datasets(path):
    cfg = _load(path)
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        unknown = [n for n in cfg.DATASETS[key] if n not in registered]
        assert not unknown, f"{path.name}: DATASETS.{key} names unregistered datasets {unknown}"
    for name in cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(name)
        tasks = meta.get("find_eval_tasks", None) or ()
        assert all(t in FIND_TASK_REGISTRY for t in tasks), (name, tasks)
        assert tasks or meta.get("evaluator_type", None), f"{name}: nothing evaluates it"
    if path in EVAL:
        assert len(cfg.DATASETS.TEST) == 1 and cfg.INPUT.MIN_SIZE_TEST > 0
