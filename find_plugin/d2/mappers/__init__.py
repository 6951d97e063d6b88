"""FIND's detectron2 dataset mappers. Importing this package registers, in
:data:`FIND_MAPPER_REGISTRY` (:func:`build_find_mapper`):

* ``find_panoptic_lsj`` -> :class:`FINDPanopticLSJMapper` (training, large-scale jitter);
* ``find_panoptic_eval`` -> :class:`FINDEvalMapper` (evaluation, panoptic datasets);
* ``find_retrieval_eval`` -> :class:`FINDRetrievalEvalMapper` (evaluation, caption datasets).
"""

from .augmentation import (
    FixedResizeShortestEdge,
    SeededAugInput,
    SeededFixedSizeCrop,
    SeededRandomFlip,
    SeededResizeScale,
    build_lsj_augmentations,
)
from .panoptic import FINDEvalMapper, FINDPanopticLSJMapper, FINDRetrievalEvalMapper
from .registry import (
    FIND_MAPPER_REGISTRY,
    build_find_mapper,
    mapper_generator,
    register_find_mapper,
    tasks_from_cfg,
)

__all__ = [
    "FIND_MAPPER_REGISTRY",
    "FINDEvalMapper",
    "FINDPanopticLSJMapper",
    "FINDRetrievalEvalMapper",
    "FixedResizeShortestEdge",
    "SeededAugInput",
    "SeededFixedSizeCrop",
    "SeededRandomFlip",
    "SeededResizeScale",
    "build_find_mapper",
    "build_lsj_augmentations",
    "mapper_generator",
    "register_find_mapper",
    "tasks_from_cfg",
]
