"""FIND mapper registry: ``cfg.INPUT.DATASET_MAPPER_NAME`` (training) or a dataset's
``find_eval_mapper`` metadata (evaluation) -> a mapper class with ``from_config(cfg, is_train,
dataset_name)``.

Also the shared pieces of the mappers' ``from_config``: the tasks (the lead's task registry) and
the text encoder (the cached frozen language model), imported lazily so that the mappers work,
with explicit arguments, without the model side.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.data import MetadataCatalog

from ...core.registry import NameRegistry
from ...tasks.batch import record_generator

__all__ = [
    "FIND_MAPPER_REGISTRY",
    "register_find_mapper",
    "build_find_mapper",
    "mapper_generator",
    "tasks_from_cfg",
]

FIND_MAPPER_REGISTRY: NameRegistry[type] = NameRegistry("FIND dataset mapper")


def register_find_mapper(name: str):
    """Class decorator: register a mapper class under ``name``."""

    def wrap(cls):
        FIND_MAPPER_REGISTRY.add(name, cls)
        return cls

    return wrap


def build_find_mapper(cfg, is_train: bool, dataset_name: Optional[str] = None):
    """The mapper of ``cfg``: training -> ``cfg.INPUT.DATASET_MAPPER_NAME``; evaluation -> the
    ``find_eval_mapper`` of ``dataset_name``'s metadata."""
    if is_train:
        name = cfg.INPUT.DATASET_MAPPER_NAME
    else:
        if dataset_name is None:
            raise ValueError("build_find_mapper: evaluation needs the dataset name")
        name = MetadataCatalog.get(dataset_name).get("find_eval_mapper", None)
        if name is None:
            raise KeyError(
                f"dataset {dataset_name!r} declares no 'find_eval_mapper' in its metadata "
                f"(registered FIND mappers: {FIND_MAPPER_REGISTRY.names()})"
            )
    if name not in FIND_MAPPER_REGISTRY:
        raise KeyError(
            f"unknown FIND dataset mapper {name!r} (cfg.INPUT.DATASET_MAPPER_NAME or the "
            f"dataset's find_eval_mapper); registered: {FIND_MAPPER_REGISTRY.names()}"
        )
    return FIND_MAPPER_REGISTRY.get(name)(cfg, is_train, dataset_name=dataset_name)


def mapper_generator(seed: int, image_id, count: Optional[int] = None) -> torch.Generator:
    """:func:`find_plugin.tasks.record_generator` (the MMDetection pipelines draw the same way)."""
    return record_generator(seed, image_id, count)


def _build_task(name, cfg, metadata):
    from ..task_registry import build_find_task

    return build_find_task(name, cfg, metadata)


def _build_text_encoder(cfg):
    from ..language import build_find_text_encoder

    return build_find_text_encoder(cfg)


def tasks_from_cfg(cfg, is_train: bool, dataset_name: Optional[str]) -> Tuple[List, Sequence[str]]:
    """``(tasks, names)``: training -> ``cfg.MODEL.FIND.TASKS.TRAIN``, each declared by one of
    ``cfg.DATASETS.TRAIN`` (``find_train_tasks``); evaluation -> ``dataset_name``'s
    ``find_eval_tasks``. Tasks are built by the task registry with the dataset's metadata."""
    if is_train:
        datasets = list(cfg.DATASETS.TRAIN) if dataset_name is None else [dataset_name]
        if not datasets:
            raise ValueError("cfg.DATASETS.TRAIN is empty")
        names = list(cfg.MODEL.FIND.TASKS.TRAIN)
        declared = set()
        for d in datasets:
            declared |= set(MetadataCatalog.get(d).get("find_train_tasks", ()))
        undeclared = [n for n in names if n not in declared]
        if undeclared:
            raise ValueError(
                f"cfg.MODEL.FIND.TASKS.TRAIN lists {undeclared}, which no training dataset "
                f"{datasets} declares (their find_train_tasks: {sorted(declared)})"
            )
        metadata = MetadataCatalog.get(datasets[0])
    else:
        if dataset_name is None:
            raise ValueError("an evaluation mapper needs the dataset name")
        metadata = MetadataCatalog.get(dataset_name)
        names = list(metadata.get("find_eval_tasks", ()))
        if not names:
            raise KeyError(f"dataset {dataset_name!r} declares no 'find_eval_tasks'")
    return [_build_task(n, cfg, metadata) for n in names], names
