"""Build FIND's frozen vision model (backbone + pixel decoder) from a detectron2 config.

Any backbone registered in ``BACKBONE_REGISTRY`` works (``cfg.MODEL.BACKBONE.NAME``): the FIND ones
(``FINDFocalNet``, ``FINDEfficientNetLite0``) or detectron2's own (``build_resnet_backbone`` with
``MODEL.RESNETS.OUT_FEATURES = [res2..res5]``, ``build_resnet_fpn_backbone`` with
``PIXEL_DECODER.IN_FEATURES = [p2..p5]``...). The pixel decoder is wired to ``output_shape()``.
"""

import logging
from typing import Any, Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from ..checkpoint.loader import load_weights
from ..encoders.vision.vision_model import FINDVisionModel
from .pixel_decoder import build_find_pixel_decoder

__all__ = ["build_find_vision_model", "find_vision_kwargs", "VISION_ONLY_DROP"]

# Official source groups that a vision-only load ignores (reported, never silently skipped).
VISION_ONLY_DROP = ("interface", "lang_proj", "logit_scale", "text_tower", "other")

logger = logging.getLogger(__name__)


def find_vision_kwargs(cfg, input_shape: ShapeSpec = None) -> Dict[str, Any]:
    """``cfg`` -> keyword arguments of the vision container: ``backbone`` (from
    ``BACKBONE_REGISTRY``), ``pixel_decoder`` (wired to ``backbone.output_shape()``),
    ``train_backbone`` / ``train_pixel_decoder`` (from ``FREEZE_*``). Shared by
    :class:`FINDVisionModel` and :class:`find_plugin.model.FINDModel` (``FINDModel(**kwargs,
    interface=...)``), so both hold the parts under the same names."""
    if "FIND_VISION" not in cfg.MODEL:
        raise KeyError("cfg.MODEL.FIND_VISION missing: call add_find_vision_config(cfg) first")
    v = cfg.MODEL.FIND_VISION
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = build_backbone(cfg, input_shape)
    return dict(
        backbone=backbone,
        pixel_decoder=build_find_pixel_decoder(cfg, backbone.output_shape()),
        train_backbone=not v.FREEZE_BACKBONE,
        train_pixel_decoder=not v.FREEZE_PIXEL_DECODER,
    )


def build_find_vision_model(cfg, input_shape: ShapeSpec = None) -> FINDVisionModel:
    """``cfg`` (with :func:`add_find_vision_config` applied) -> :class:`FINDVisionModel`.

    Freezing follows ``cfg.MODEL.FIND_VISION.FREEZE_BACKBONE`` / ``FREEZE_PIXEL_DECODER``;
    ``cfg.MODEL.FIND_VISION.WEIGHTS`` (if set: path, URL or zoo name) is loaded strictly into both
    parts through the explicit key table (official FIND / X-Decoder / SEEM files, or ours); the
    interface and language groups of the file are dropped and listed in the log.
    """
    model = FINDVisionModel(**find_vision_kwargs(cfg, input_shape))
    weights = cfg.MODEL.FIND_VISION.WEIGHTS
    if weights:
        result = load_weights(model, weights, drop=VISION_ONLY_DROP)
        logger.info("Loaded FIND vision weights (backbone + pixel decoder) from %s", result.path)
    return model
