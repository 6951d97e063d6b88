"""Evaluator registry and dispatch: which evaluators score a dataset.

``FIND_EVALUATOR_REGISTRY`` maps an evaluator name to ``builder(cfg, dataset_name, output_dir) ->
DatasetEvaluator``. Registered: ``FINDGroundingEvaluator``, ``FINDInteractiveEvaluator``,
``FINDRetrievalEvaluator``, ``FINDInterleaveRetrievalEvaluator`` (the names the task registry gives
its tasks). A builder reads the dataset's ``find_eval_tasks`` to pick its modes (e.g.
``FINDGroundingEvaluator`` builds one evaluator for ``grounding`` and one for ``interleave`` when
the dataset declares both).

:func:`build_find_evaluator` is what the trainer calls: for each task of the dataset's
``MetadataCatalog`` entry ``find_eval_tasks`` it builds that task's evaluator; ``generic`` gives
detectron2's own ``COCOPanopticEvaluator`` + ``COCOEvaluator`` + ``SemSegEvaluator`` (chosen
by ``evaluator_type`` and ``MODEL.FIND.TEST.{PANOPTIC,INSTANCE,SEMANTIC}_ON``, as Mask2Former's
``train_net`` does). A dataset without ``find_eval_tasks`` is dispatched on ``evaluator_type``: a
registered FIND evaluator name, or one of detectron2's types (``coco_panoptic_seg``, ``coco``,
``sem_seg``).
"""

from typing import Callable, List, Optional, Sequence

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from detectron2.utils.registry import Registry

from ..task_registry import FIND_TASK_REGISTRY
from ..task_registry import task_evaluator as registry_task_evaluator
from .grounding import FINDGroundingEvaluator
from .interactive import FINDInteractiveEvaluator
from .interleave_retrieval import FINDInterleaveRetrievalEvaluator
from .retrieval import FINDRetrievalEvaluator

__all__ = [
    "FIND_EVALUATOR_REGISTRY",
    "build_find_evaluator",
    "build_generic_evaluators",
    "register_find_evaluator",
]

FIND_EVALUATOR_REGISTRY = Registry("FIND_EVALUATOR")
FIND_EVALUATOR_REGISTRY.__doc__ = (
    "Evaluator name -> ``builder(cfg, dataset_name, output_dir) -> DatasetEvaluator``."
)

# detectron2 evaluator types served by the generic (standard) evaluators.
GENERIC_EVALUATOR_TYPES = ("coco_panoptic_seg", "coco", "sem_seg")

# Metadata each standard evaluator reads at construction (checked for a clear error).
_NEEDS = {
    "COCOPanopticEvaluator": (
        "panoptic_json",
        "panoptic_root",
        "thing_dataset_id_to_contiguous_id",
        "stuff_dataset_id_to_contiguous_id",
    ),
    "SemSegEvaluator": ("stuff_classes", "ignore_label"),
}


def register_find_evaluator(name: str):
    """Decorator: register ``builder(cfg, dataset_name, output_dir)`` under ``name``."""

    def wrap(builder: Callable) -> Callable:
        builder.__name__ = builder.__qualname__ = name  # fvcore keys on __name__
        FIND_EVALUATOR_REGISTRY.register(builder)
        return builder

    return wrap


def _combine(evaluators: List[DatasetEvaluator]) -> DatasetEvaluator:
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def _eval_tasks(dataset_name: str) -> Optional[Sequence[str]]:
    tasks = MetadataCatalog.get(dataset_name).get("find_eval_tasks", None)
    return None if tasks is None else tuple(tasks)


def _modes(dataset_name: str, own: Sequence[str]) -> List[str]:
    """The dataset's evaluation tasks among ``own`` (default: ``own[0]``)."""
    tasks = _eval_tasks(dataset_name) or ()
    return [t for t in tasks if t in own] or [own[0]]


def _seed(cfg) -> Optional[int]:
    """The evaluation seed ``cfg.MODEL.FIND.TEST.SEED`` (None without a FIND test node)."""
    seed = cfg.MODEL.get("FIND", {}).get("TEST", {}).get("SEED", None)
    return None if seed is None else int(seed)


def _test_flag(cfg, name: str) -> bool:
    """``cfg.MODEL.FIND.TEST.<name>``; True where the config has no FIND test node."""
    test = cfg.MODEL.get("FIND", {}).get("TEST", {})
    return bool(test.get(name, True))


@register_find_evaluator("FINDGroundingEvaluator")
def _build_grounding(cfg, dataset_name, output_dir):
    modes = _modes(dataset_name, ("grounding", "interleave"))
    return _combine(
        [
            FINDGroundingEvaluator(dataset_name, task=m, output_dir=output_dir, seed=_seed(cfg))
            for m in modes
        ]
    )


@register_find_evaluator("FINDInteractiveEvaluator")
def _build_interactive(cfg, dataset_name, output_dir):
    clicks = cfg.MODEL.get("FIND", {}).get("TEST", {}).get("INTERACTIVE_MAX_CLICKS", 1)
    return FINDInteractiveEvaluator(
        dataset_name, max_clicks=clicks, output_dir=output_dir, seed=_seed(cfg)
    )


@register_find_evaluator("FINDRetrievalEvaluator")
def _build_retrieval(cfg, dataset_name, output_dir):
    modes = _modes(dataset_name, ("retrieval", "interleave_retrieval"))
    return _combine(
        [
            FINDRetrievalEvaluator(
                dataset_name,
                task=m,
                output_dir=output_dir,
                device=cfg.MODEL.DEVICE,
                seed=_seed(cfg),
            )
            for m in modes
        ]
    )


@register_find_evaluator("FINDInterleaveRetrievalEvaluator")
def _build_interleave_retrieval(cfg, dataset_name, output_dir):
    return FINDInterleaveRetrievalEvaluator(
        dataset_name, output_dir=output_dir, device=cfg.MODEL.DEVICE, seed=_seed(cfg)
    )


def build_generic_evaluators(cfg, dataset_name, output_dir=None) -> List[DatasetEvaluator]:
    """detectron2's own evaluators for generic segmentation, chosen as Mask2Former's train_net
    does: ``coco_panoptic_seg`` -> COCOPanopticEvaluator (if PANOPTIC_ON), COCOEvaluator (if
    INSTANCE_ON; reads ``json_file``, else converts the dataset into ``output_dir``) and
    SemSegEvaluator (if SEMANTIC_ON; reads ``sem_seg_file_name`` of the dataset dicts);
    ``coco`` -> COCOEvaluator; ``sem_seg`` -> SemSegEvaluator."""
    meta = MetadataCatalog.get(dataset_name)
    etype = meta.get("evaluator_type", None)
    if etype not in GENERIC_EVALUATOR_TYPES:
        raise ValueError(
            f"dataset {dataset_name!r}: generic evaluation needs metadata evaluator_type in "
            f"{list(GENERIC_EVALUATOR_TYPES)}, got {etype!r}"
        )
    panoptic = etype == "coco_panoptic_seg" and _test_flag(cfg, "PANOPTIC_ON")
    instance = etype == "coco" or (etype == "coco_panoptic_seg" and _test_flag(cfg, "INSTANCE_ON"))
    semantic = etype == "sem_seg" or (
        etype == "coco_panoptic_seg" and _test_flag(cfg, "SEMANTIC_ON")
    )
    wanted = [
        (
            panoptic,
            "COCOPanopticEvaluator",
            lambda: COCOPanopticEvaluator(dataset_name, output_dir),
        ),
        (instance, "COCOEvaluator", lambda: COCOEvaluator(dataset_name, output_dir=output_dir)),
        (
            semantic,
            "SemSegEvaluator",
            lambda: SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir),
        ),
    ]
    out = []
    for on, name, build in wanted:
        if not on:
            continue
        missing = [k for k in _NEEDS.get(name, ()) if not hasattr(meta, k)]
        if missing:
            raise KeyError(
                f"dataset {dataset_name!r}: {name} needs metadata {missing} (evaluator_type "
                f"{etype!r})"
            )
        out.append(build())
    if not out:
        raise ValueError(
            f"dataset {dataset_name!r}: generic evaluation with every output disabled "
            "(MODEL.FIND.TEST.PANOPTIC_ON / INSTANCE_ON / SEMANTIC_ON)"
        )
    return out


def build_find_evaluator(
    cfg,
    dataset_name: str,
    output_dir: Optional[str] = None,
    *,
    task_evaluator: Optional[Callable[[str], Optional[str]]] = None,
) -> DatasetEvaluator:
    """Every evaluator of ``dataset_name``, combined with ``DatasetEvaluators`` if several.

    Dispatch: the tasks of the dataset metadata ``find_eval_tasks`` (evaluator of each task from
    ``task_evaluator(task)``, default the FIND task registry's
    :func:`~find_plugin.d2.task_registry.task_evaluator`; None = detectron2's standard
    evaluators), else its ``evaluator_type`` (a registered FIND evaluator name or a detectron2
    generic type). Each evaluator name is built once."""
    lookup = task_evaluator or registry_task_evaluator
    tasks = _eval_tasks(dataset_name)
    if tasks:
        names: List[Optional[str]] = []
        for t in tasks:
            try:
                name = lookup(t)
            except KeyError:
                raise KeyError(
                    f"dataset {dataset_name!r}: unknown task {t!r} in find_eval_tasks; known "
                    f"tasks: {sorted(k for k, _ in FIND_TASK_REGISTRY)}"
                ) from None
            if name not in names:
                names.append(name)
    else:
        etype = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if etype in FIND_EVALUATOR_REGISTRY:
            names = [etype]
        elif etype in GENERIC_EVALUATOR_TYPES:
            names = [None]
        else:
            raise ValueError(
                f"dataset {dataset_name!r}: no evaluator; set its metadata find_eval_tasks (tasks "
                f"{sorted(k for k, _ in FIND_TASK_REGISTRY)}) or evaluator_type (one of "
                f"{sorted(k for k, _ in FIND_EVALUATOR_REGISTRY)} or "
                f"{list(GENERIC_EVALUATOR_TYPES)}), got {etype!r}"
            )
    evaluators: List[DatasetEvaluator] = []
    for name in names:
        if name is None:
            evaluators += build_generic_evaluators(cfg, dataset_name, output_dir)
        elif name not in FIND_EVALUATOR_REGISTRY:
            raise KeyError(
                f"dataset {dataset_name!r}: evaluator {name!r} is not registered in "
                f"FIND_EVALUATOR; registered: {sorted(k for k, _ in FIND_EVALUATOR_REGISTRY)}"
            )
        else:
            evaluators.append(FIND_EVALUATOR_REGISTRY.get(name)(cfg, dataset_name, output_dir))
    return _combine(evaluators)
