"""FIND pixel-decoder registry for detectron2 (``FIND_PIXEL_DECODER_REGISTRY``).

A registered object is called as ``obj(cfg, input_shape)`` with ``input_shape`` the backbone's
``output_shape()`` (``{name: ShapeSpec}``) and must return a module with
``forward_features(features)`` returning
``(mask_features, transformer_encoder_features, multi_scale_features)``.
The name is read from ``cfg.MODEL.FIND_VISION.PIXEL_DECODER.NAME``.
"""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

from ..encoders.vision.pixel_decoder import TransformerEncoderPixelDecoder
from ..presets import PIXEL_DECODER_KEYS
from .vision_config import cfg_section_kwargs

__all__ = [
    "FIND_PIXEL_DECODER_REGISTRY",
    "FINDTransformerEncoderPixelDecoder",
    "build_find_pixel_decoder",
]

FIND_PIXEL_DECODER_REGISTRY = Registry("FIND_PIXEL_DECODER")
FIND_PIXEL_DECODER_REGISTRY.__doc__ = """
Registry of FIND pixel decoders: ``obj(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module``.
"""


def select_input_shape(input_shape: Dict[str, ShapeSpec], in_features) -> Dict[str, ShapeSpec]:
    """Keep ``in_features`` of ``input_shape``; error naming the missing ones."""
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise KeyError(
            f"cfg.MODEL.FIND_VISION.PIXEL_DECODER.IN_FEATURES {list(in_features)}: {missing} not "
            f"produced by the backbone (it outputs {sorted(input_shape)})"
        )
    return {f: input_shape[f] for f in in_features}


@FIND_PIXEL_DECODER_REGISTRY.register()
class FINDTransformerEncoderPixelDecoder(TransformerEncoderPixelDecoder):
    """``transformer_encoder_fpn`` pixel decoder (see :class:`TransformerEncoderPixelDecoder`)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        p = cfg.MODEL.FIND_VISION.PIXEL_DECODER
        return dict(
            input_shape=select_input_shape(input_shape, p.IN_FEATURES),
            **cfg_section_kwargs(p, PIXEL_DECODER_KEYS),
            frozen=cfg.MODEL.FIND_VISION.FREEZE_PIXEL_DECODER,
        )


def build_find_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build ``cfg.MODEL.FIND_VISION.PIXEL_DECODER.NAME`` from the FIND pixel-decoder registry."""
    name = cfg.MODEL.FIND_VISION.PIXEL_DECODER.NAME
    model = FIND_PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise TypeError(f"pixel decoder {name!r} must define forward_features(features)")
    return model
