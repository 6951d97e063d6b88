"""detectron2 side of find_plugin. Importing it registers, explicitly:

* backbones ``FINDFocalNet`` and ``FINDEfficientNetLite0`` in ``BACKBONE_REGISTRY``;
* pixel decoder ``FINDTransformerEncoderPixelDecoder`` in ``FIND_PIXEL_DECODER_REGISTRY``.
"""

from . import pixel_decoder as _pixel_decoder  # noqa: F401  (registration)
from . import vision_backbones as _vision_backbones  # noqa: F401  (registration)
from .checkpointer import FINDCheckpointer, add_find_weights_config
from .pixel_decoder import FIND_PIXEL_DECODER_REGISTRY, build_find_pixel_decoder
from .vision_builder import build_find_vision_model, find_vision_kwargs
from .vision_config import add_find_vision_config, set_find_vision_sections

__all__ = [
    "FINDCheckpointer",
    "add_find_weights_config",
    "FIND_PIXEL_DECODER_REGISTRY",
    "add_find_vision_config",
    "build_find_pixel_decoder",
    "build_find_vision_model",
    "find_vision_kwargs",
    "set_find_vision_sections",
]
