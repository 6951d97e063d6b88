"""Frozen vision encoders (pure torch): FocalNet, EfficientNet-Lite0, the X-Decoder pixel decoder,
the backbone + pixel-decoder container and freezing helpers."""

from .efficientnet_lite import EfficientNetLite0Backbone
from .focalnet import FocalNet, build_focalnet
from .freezing import FrozenTrainMixin, freeze_, is_frozen, keep_frozen_in_eval, unfreeze_
from .pixel_decoder import TransformerEncoderPixelDecoder
from .vision_model import FINDVisionModel

__all__ = [
    "EfficientNetLite0Backbone",
    "FINDVisionModel",
    "FocalNet",
    "FrozenTrainMixin",
    "TransformerEncoderPixelDecoder",
    "build_focalnet",
    "freeze_",
    "is_frozen",
    "keep_frozen_in_eval",
    "unfreeze_",
]
