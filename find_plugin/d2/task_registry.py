"""The detectron2 task registry: task name -> builder of its framework-free task.

``FIND_TASK_REGISTRY`` maps a task name (``cfg.MODEL.FIND.TASKS.TRAIN``, a dataset's
``find_train_tasks`` / ``find_eval_tasks`` metadata) to ``builder(cfg, metadata) ->``
:class:`~find_plugin.tasks.FINDTask`, with the name of the evaluator that scores it
(``builder.evaluator``; None = detectron2's standard evaluators, chosen by ``evaluator_type``). The
task's targets, prototype, losses (criterion groups) and metric come from the task itself, so adding
a task or a dataset is registering, never editing the trainer or the meta-architecture::

    @register_find_task(evaluator="FINDGroundingEvaluator")
    def my_task(cfg, metadata):
        return MyTask(...)
"""

from typing import Optional

from detectron2.data import MetadataCatalog
from detectron2.utils.registry import Registry

from ..tasks import FINDTask, build_task

__all__ = ["FIND_TASK_REGISTRY", "register_find_task", "build_find_task", "task_evaluator"]

FIND_TASK_REGISTRY = Registry("FIND_TASK")
FIND_TASK_REGISTRY.__doc__ = """Task name -> ``builder(cfg, metadata) -> FINDTask``."""


def register_find_task(*, evaluator: Optional[str]):
    """Decorator: register ``builder`` under its function name with its evaluator name."""

    def wrap(builder):
        builder.evaluator = evaluator
        FIND_TASK_REGISTRY.register(builder)
        return builder

    return wrap


def build_find_task(name: str, cfg, metadata=None) -> FINDTask:
    """The task ``name`` configured from ``cfg`` (and the dataset ``metadata`` when given)."""
    if name not in FIND_TASK_REGISTRY:
        raise KeyError(
            f"unknown FIND task {name!r} (cfg.MODEL.FIND.TASKS or a dataset's find_*_tasks); "
            f"registered: {sorted(k for k, _ in FIND_TASK_REGISTRY)}"
        )
    return FIND_TASK_REGISTRY.get(name)(cfg, metadata)


def task_evaluator(name: str) -> Optional[str]:
    """Evaluator name of task ``name`` (None = detectron2's standard evaluators)."""
    return FIND_TASK_REGISTRY.get(name).evaluator


def _class_names(cfg, metadata):
    """Contiguous class names: the dataset's (thing + stuff for panoptic), else the training
    dataset's, as Mask2Former reads them at build time."""
    if metadata is None and cfg.DATASETS.TRAIN:
        metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    names = getattr(metadata, "stuff_classes", None) or getattr(metadata, "thing_classes", None)
    if not names:
        raise KeyError(
            "generic/grounding tasks need class names: the dataset metadata has neither "
            "stuff_classes nor thing_classes"
        )
    return list(names)


@register_find_task(evaluator=None)
def generic(cfg, metadata):
    t = cfg.MODEL.FIND.TASKS
    return build_task(
        "generic",
        class_names=_class_names(cfg, metadata),
        templates=tuple(t.CLASS_TEMPLATES),
    )


@register_find_task(evaluator="FINDGroundingEvaluator")
def grounding(cfg, metadata):
    t = cfg.MODEL.FIND.TASKS
    try:
        names = _class_names(cfg, metadata)
    except KeyError:
        names = None  # referring-only data: no class-prompt fallback
    return build_task(
        "grounding",
        class_names=names,
        max_sentences=t.GROUNDING_MAX_SENTENCES,
        templates=tuple(t.CLASS_TEMPLATES),
    )


@register_find_task(evaluator="FINDInteractiveEvaluator")
def interactive(cfg, metadata):
    t = cfg.MODEL.FIND.TASKS
    return build_task(
        "interactive",
        max_prompts=t.SPATIAL_MAX_PROMPTS,
        kinds=tuple(t.SPATIAL_KINDS),
        correction_prob=t.SPATIAL_CORRECTION_PROB,
    )


@register_find_task(evaluator="FINDRetrievalEvaluator")
def retrieval(cfg, metadata):
    return build_task("retrieval")


@register_find_task(evaluator="FINDGroundingEvaluator")
def interleave(cfg, metadata):
    t = cfg.MODEL.FIND.TASKS
    return build_task(
        "interleave",
        max_phrases=t.INTERLEAVE_MAX_PHRASES,
        visual_prob=t.INTERLEAVE_VISUAL_PROB,
        kinds=tuple(t.SPATIAL_KINDS),
    )


@register_find_task(evaluator="FINDRetrievalEvaluator")
def interleave_retrieval(cfg, metadata):
    return build_task(
        "interleave_retrieval",
        first_sentence_only=cfg.MODEL.FIND.TEST.INTERLEAVE_FIRST_SENTENCE_ONLY,
    )


@register_find_task(evaluator="FINDInterleaveRetrievalEvaluator")
def interleave_retrieval_visual(cfg, metadata):
    return build_task(
        "interleave_retrieval_visual",
        visual_prob=cfg.MODEL.FIND.TASKS.INTERLEAVE_VISUAL_PROB,
    )
