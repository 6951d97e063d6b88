"""detectron2 side of find_plugin. Importing it registers, explicitly:

* backbones ``FINDFocalNet`` and ``FINDEfficientNetLite0`` in ``BACKBONE_REGISTRY``;
* pixel decoder ``FINDTransformerEncoderPixelDecoder`` in ``FIND_PIXEL_DECODER_REGISTRY``;
* head ``FINDHead`` in ``SEM_SEG_HEADS_REGISTRY`` and meta-architecture ``FIND`` in
  ``META_ARCH_REGISTRY``;
* the tasks ``generic``, ``grounding``, ``interactive``, ``retrieval``, ``interleave`` and
  ``interleave_retrieval`` in ``FIND_TASK_REGISTRY``;
* evaluators ``FINDGroundingEvaluator``, ``FINDInteractiveEvaluator`` and
  ``FINDRetrievalEvaluator`` in ``FIND_EVALUATOR_REGISTRY`` (``build_find_evaluator``);
* mappers ``find_panoptic_lsj``, ``find_panoptic_eval`` and ``find_retrieval_eval`` in
  ``FIND_MAPPER_REGISTRY`` (``build_find_mapper``);
* datasets ``find_coco_2017_{train,val}_panoptic...`` and ``find_coco_karpathy_{val,test}``
  under ``$DETECTRON2_DATASETS`` (lazy: nothing is read until a dataset is used).
"""

from . import datasets as _datasets  # noqa: F401  (registration)
from . import evaluation as _evaluation  # noqa: F401  (registration)
from . import head as _head  # noqa: F401  (registration)
from . import mappers as _mappers  # noqa: F401  (registration)
from . import meta_arch as _meta_arch  # noqa: F401  (registration)
from . import pixel_decoder as _pixel_decoder  # noqa: F401  (registration)
from . import task_registry as _task_registry  # noqa: F401  (registration)
from . import vision_backbones as _vision_backbones  # noqa: F401  (registration)
from .checkpointer import FINDCheckpointer, add_find_weights_config
from .config import add_find_config, build_find_criterion, interface_kwargs, set_find_sections
from .head import FINDHead
from .language import build_find_text_encoder
from .meta_arch import FIND
from .pixel_decoder import FIND_PIXEL_DECODER_REGISTRY, build_find_pixel_decoder
from .task_registry import FIND_TASK_REGISTRY, build_find_task, register_find_task
from .vision_builder import build_find_vision_model, find_vision_kwargs
from .vision_config import add_find_vision_config, set_find_vision_sections

__all__ = [
    "add_find_config",
    "build_find_criterion",
    "build_find_task",
    "build_find_text_encoder",
    "FIND",
    "FIND_TASK_REGISTRY",
    "FINDHead",
    "interface_kwargs",
    "register_find_task",
    "set_find_sections",
    "FINDCheckpointer",
    "add_find_weights_config",
    "FIND_PIXEL_DECODER_REGISTRY",
    "add_find_vision_config",
    "build_find_pixel_decoder",
    "build_find_vision_model",
    "find_vision_kwargs",
    "set_find_vision_sections",
]
