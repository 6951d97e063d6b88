"""Frozen vision side of FIND: backbone + pixel decoder.

:class:`FINDVisionModel` runs ``images [B, 3, H, W] -> backbone maps -> pixel decoder`` and returns

* ``features``: the backbone dict (``res2..res5``),
* ``mask_features`` ``[B, mask_dim, H/4, W/4]``, ``multi_scale_features`` (3 maps, level 0 =
  stride 32), ``transformer_encoder_features`` ``[B, conv_dim, H/32, W/32]``.

Both parts are frozen by default; :class:`FINDVisionModel` keeps frozen parts in eval mode when a
parent calls ``.train()``. ``train_backbone`` / ``train_pixel_decoder`` switch a part to trainable
(e.g. the pixel decoder on top of EfficientNet-Lite0, for which no pretrained decoder exists).

:class:`find_plugin.model.FINDModel` is this container plus the interface (same attribute names,
so its state-dict keys are ``backbone.*``, ``pixel_decoder.*`` and ``interface.*``).

Sub-module names equal the official checkpoint prefixes (``backbone.*``; ``pixel_decoder.*`` for
``sem_seg_head.pixel_decoder.*``), so official, X-Decoder and SEEM files load through the one
explicit key table of :mod:`find_plugin.checkpoint.official` (see ``build_find_vision_model``).
"""

from typing import Dict

import torch
from torch import nn

from .feature_cache import FeatureCache
from .freezing import FrozenTrainMixin, freeze_, unfreeze_

__all__ = ["FINDVisionModel"]


class FINDVisionModel(FrozenTrainMixin, nn.Module):
    """Backbone + pixel decoder container (sub-module names ``backbone`` and ``pixel_decoder``).

    Args (keyword-only):
        backbone: module mapping ``[B, 3, H, W]`` to a dict of maps (e.g. ``res2..res5``).
        pixel_decoder: module with ``forward_features(features) -> (mask, enc, multi_scale)``.
        train_backbone / train_pixel_decoder: make that part trainable (default: both frozen).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        train_backbone: bool = False,
        train_pixel_decoder: bool = False,
    ):
        super().__init__()
        if not callable(getattr(pixel_decoder, "forward_features", None)):
            raise TypeError(
                f"pixel_decoder must define forward_features(features), got {type(pixel_decoder)}"
            )
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.backbone_cache = None
        self.set_trainable(backbone=train_backbone, pixel_decoder=train_pixel_decoder)

    def enable_backbone_cache(self, max_items: int) -> "FINDVisionModel":
        """Cache the frozen backbone's features of up to ``max_items`` images by content
        (:class:`~.feature_cache.FeatureCache`); 0 switches the cache off. Used only while the
        backbone is frozen."""
        self.backbone_cache = FeatureCache(max_items) if max_items > 0 else None
        return self

    def set_trainable(self, *, backbone: bool, pixel_decoder: bool) -> "FINDVisionModel":
        """Freeze (False) or unfreeze (True) each part; frozen parts are put in eval mode."""
        for part, trainable in ((self.backbone, backbone), (self.pixel_decoder, pixel_decoder)):
            if trainable:
                unfreeze_(part)
                part.train(self.training)
            else:
                freeze_(part)
        return self

    def extract_features(self, images: torch.Tensor) -> Dict[str, object]:
        """``images`` ``[B, 3, H, W]`` (normalised, H, W multiples of 32) -> output dict above."""
        if images.dim() != 4:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        if self.backbone_cache is not None and frozen:
            features = self.backbone_cache(self.backbone, images)
        else:
            features = self.backbone(images)
        mask, enc, multi_scale = self.pixel_decoder.forward_features(features)
        return {
            "features": features,
            "mask_features": mask,
            "transformer_encoder_features": enc,
            "multi_scale_features": multi_scale,
        }

    def forward(self, images: torch.Tensor) -> Dict[str, object]:
        """Same as :meth:`extract_features` (subclasses such as ``FINDModel`` extend ``forward``
        and keep :meth:`extract_features` for the vision side)."""
        return self.extract_features(images)
