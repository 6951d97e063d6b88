"""FIND vision backbones registered in detectron2's ``BACKBONE_REGISTRY``.

* ``FINDFocalNet``: FocalNet (``focal_dw`` FocalNet-T or ``focal`` FocalNet-L), keys identical
  to the official ``backbone.*`` keys. Reads ``cfg.MODEL.FIND_VISION.FOCAL`` (keys:
  ``find_plugin.presets.FOCALNET_KEYS``).
* ``FINDEfficientNetLite0``: EfficientNet-Lite0 with packaged ImageNet weights.
  Reads ``cfg.MODEL.FIND_VISION.EFFICIENTNET``.

Both are ``@configurable``: ``Cls(cfg, input_shape)`` (what ``build_backbone`` does) or
``Cls(**explicit_kwargs)``. Both return ``{resN: [B, C, H/s, W/s]}`` and are frozen by default
(``cfg.MODEL.FIND_VISION.FREEZE_BACKBONE``).
"""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..encoders.vision.efficientnet_lite import EfficientNetLite0Backbone
from ..encoders.vision.focalnet import STAGE_NAMES, FocalNet
from ..presets import FOCALNET_KEYS
from .vision_config import cfg_section_kwargs

__all__ = ["FINDFocalNet", "FINDEfficientNetLite0"]


def _check_in_channels(input_shape, name: str):
    if input_shape is not None and input_shape.channels not in (None, 3):
        raise ValueError(f"{name} expects 3 input channels, got input_shape={input_shape}")


class _ShapeMixin:
    """``output_shape()`` from the ``out_channels`` / ``out_strides`` properties."""

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=c, stride=self.out_strides[n])
            for n, c in self.out_channels.items()
        }

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
class FINDFocalNet(_ShapeMixin, FocalNet, Backbone):
    """detectron2 FocalNet backbone; kwargs as :class:`FocalNet` plus ``out_features``."""

    @configurable
    def __init__(self, *, out_features=STAGE_NAMES, **focal_kwargs):
        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"FINDFocalNet: out_features must be a subset of {STAGE_NAMES}, "
                f"got {list(out_features)}"
            )
        out_indices = tuple(STAGE_NAMES.index(f) for f in STAGE_NAMES if f in out_features)
        super().__init__(out_indices=out_indices, **focal_kwargs)
        self._out_features = [STAGE_NAMES[i] for i in out_indices]

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        _check_in_channels(input_shape, "FINDFocalNet")
        f = cfg.MODEL.FIND_VISION.FOCAL
        return dict(
            cfg_section_kwargs(f, FOCALNET_KEYS),
            out_features=tuple(f.OUT_FEATURES),
            frozen=cfg.MODEL.FIND_VISION.FREEZE_BACKBONE,
        )


@BACKBONE_REGISTRY.register()
class FINDEfficientNetLite0(_ShapeMixin, EfficientNetLite0Backbone, Backbone):
    """detectron2 EfficientNet-Lite0 backbone (res2..res5 = 24/40/112/320 ch, strides 4..32)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        _check_in_channels(input_shape, "FINDEfficientNetLite0")
        e = cfg.MODEL.FIND_VISION.EFFICIENTNET
        return dict(
            pretrained=e.PRETRAINED,
            weights_path=e.WEIGHTS or None,
            out_features=tuple(e.OUT_FEATURES),
            frozen=cfg.MODEL.FIND_VISION.FREEZE_BACKBONE,
        )
