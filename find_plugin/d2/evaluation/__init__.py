"""FIND evaluators for detectron2 (thin adapters of :mod:`find_plugin.tasks.metrics`).

Evaluators (``DatasetEvaluator`` subclasses; results ``{task_key: {metric: value}}``, rank 0 only):

* :class:`FINDGroundingEvaluator`: task keys ``"grounding"`` (``grounding_masks``) and
  ``"interleave"`` (``interleave_masks``); metrics ``precision@{0.5..0.9}``, ``cIoU``, ``mIoU``
  and their ``*_exact`` corrections;
* :class:`FINDInteractiveEvaluator`: task key ``"interactive"``; ``noc@{0.5,0.8,0.85,0.9}``,
  ``miou@iter{k}``;
* :class:`FINDRetrievalEvaluator`: task keys ``"retrieval"`` (``caption_embeddings``) and
  ``"interleave_retrieval"`` (``interleave_embeddings``); ``irtr``, ``ir{1,5,10}``,
  ``tr{1,5,10}``;
* :class:`FINDInterleaveRetrievalEvaluator`: task key ``"interleave_retrieval_visual"``
  (cross-image visual references, score with the entity term); ``ir{1,5,10}`` (the official
  ``interleave2ir{1,5,10}``), ``tr{1,5,10}``.

Every FIND evaluator logs the evaluation seed (``MODEL.FIND.TEST.SEED``) with its results and
writes it into ``<output_dir>/find_<task>_metrics.json`` (``{"seed": s, task: {...}}``).

Registry ``FIND_EVALUATOR_REGISTRY`` (``Registry("FIND_EVALUATOR")``): ``FINDGroundingEvaluator``,
``FINDInteractiveEvaluator``, ``FINDRetrievalEvaluator``, ``FINDInterleaveRetrievalEvaluator``
-> ``builder(cfg, dataset_name,
output_dir)``; :func:`build_find_evaluator` dispatches on a dataset's ``find_eval_tasks`` /
``evaluator_type``.
"""

from .base import FINDMetricEvaluator, write_json_atomic
from .grounding import FINDGroundingEvaluator
from .interactive import FINDInteractiveEvaluator
from .interleave_retrieval import FINDInterleaveRetrievalEvaluator
from .registry import (
    FIND_EVALUATOR_REGISTRY,
    build_find_evaluator,
    build_generic_evaluators,
    register_find_evaluator,
)
from .retrieval import FINDRetrievalEvaluator

__all__ = [
    "FIND_EVALUATOR_REGISTRY",
    "FINDGroundingEvaluator",
    "FINDInteractiveEvaluator",
    "FINDInterleaveRetrievalEvaluator",
    "FINDMetricEvaluator",
    "FINDRetrievalEvaluator",
    "build_find_evaluator",
    "build_generic_evaluators",
    "register_find_evaluator",
    "write_json_atomic",
]
