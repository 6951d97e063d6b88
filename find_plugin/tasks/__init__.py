"""Framework-free FIND task layer (torch only, over :mod:`find_plugin.core`).

One module per task, each registered here by explicit import: ``generic`` (panoptic / instance /
semantic + the class bank), ``grounding`` (referring), ``interactive``, ``retrieval``,
``interleave``, ``interleave_retrieval`` (text-only README protocol) and
``interleave_retrieval_visual`` (cross-image visual references). Each turns records into interface
inputs and criterion targets (:mod:`.base`), simulates its prompts (:mod:`.prompts`), picks its
predictions and computes its metrics (:mod:`.metrics`); :mod:`.gallery` searches large retrieval
galleries (exact streamed, or a faiss index). The detectron2 and MMDetection adapters only
convert their formats around these. A new task is one module with a :class:`FINDTask` subclass
decorated with :func:`register_task` (and, if it needs new embeddings, a core prototype and input
kind).
"""

from . import (  # noqa: F401 (registration)
    generic,
    grounding,
    interactive,
    interleave,
    interleave_retrieval,
    interleave_retrieval_visual,
    retrieval,
)
from .base import (
    FINDTask,
    TokenFeatures,
    build_task,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)
from .batch import (
    TaskBatch,
    collate_samples,
    criterion_loss_groups,
    prepare_batch,
    record_generator,
    sample_record,
    task_losses,
)
from .gallery import ExactGallery, FaissGallery
from .generic import GenericSegmentationTask
from .grounding import GroundingTask
from .interactive import InteractiveTask
from .interleave import InterleaveTask
from .interleave_retrieval import InterleaveRetrievalTask
from .interleave_retrieval_visual import InterleaveVisualRetrievalTask
from .retrieval import RetrievalTask

__all__ = [
    "build_task",
    "collate_samples",
    "sample_record",
    "criterion_loss_groups",
    "ExactGallery",
    "FaissGallery",
    "FINDTask",
    "GenericSegmentationTask",
    "get_task",
    "GroundingTask",
    "InteractiveTask",
    "InterleaveRetrievalTask",
    "InterleaveVisualRetrievalTask",
    "InterleaveTask",
    "list_tasks",
    "prepare_batch",
    "record_generator",
    "register_task",
    "RetrievalTask",
    "TaskBatch",
    "task_losses",
    "TokenFeatures",
    "unregister_task",
]
