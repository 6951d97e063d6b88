"""``FINDHead`` in detectron2's ``SEM_SEG_HEADS_REGISTRY``: the pixel decoder + the FIND interface.

Selected with ``cfg.MODEL.SEM_SEG_HEAD.NAME = "FINDHead"`` and built from the backbone's
``output_shape()``, like Mask2Former's head. The meta-architecture :class:`~.meta_arch.FIND` holds
the two parts under its own attribute names ``pixel_decoder`` and ``interface`` (so one checkpoint
layout, ``backbone.* / pixel_decoder.* / interface.*``, serves the core model, detectron2 and
MMDetection); a replacement head only has to expose those two attributes.
"""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..core.interface import FINDInterface
from .config import interface_kwargs
from .pixel_decoder import build_find_pixel_decoder

__all__ = ["FINDHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class FINDHead(nn.Module):
    """Args (keyword-only): ``pixel_decoder`` (``forward_features(maps) -> (mask_features, enc,
    multi_scale)``), ``interface`` (:class:`~find_plugin.core.FINDInterface`)."""

    @configurable
    def __init__(self, *, pixel_decoder: nn.Module, interface: nn.Module):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.interface = interface

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "pixel_decoder": build_find_pixel_decoder(cfg, input_shape),
            "interface": FINDInterface(**interface_kwargs(cfg)),
        }

    def forward(self, features, tasks=None, *, class_bank=None, generator=None):
        """Backbone maps -> interface outputs (see ``FINDInterface.forward``)."""
        mask_features, _, multi_scale = self.pixel_decoder.forward_features(features)
        return self.interface(
            multi_scale, mask_features, tasks, class_bank=class_bank, generator=generator
        )
