"""Framework-free composite FIND model: frozen backbone -> frozen pixel decoder -> FIND interface.

:class:`FINDModel` is the layout of find_plugin checkpoints: its ``state_dict()`` keys are
``backbone.*`` (FocalNet), ``pixel_decoder.*`` (X-Decoder ``transformer_encoder_fpn``) and
``interface.*`` (:class:`~find_plugin.core.FINDInterface`, incl. ``interface.lang_proj`` and
``interface.logit_scale``). It is the vision container
:class:`~find_plugin.encoders.vision.FINDVisionModel` (freezing, ``extract_features``) plus the
interface; the detectron2 / mmdet meta-architectures hold the same three attribute names, so one
checkpoint loads everywhere. The language model is NOT part of it (loaded from its own weights; the
interface consumes token features, see ``FINDInterface.project_tokens``).

Shapes: ``images`` [B, 3, H, W] normalised (``(x - mean) / std`` on 0..255 RGB), H and W multiples
of 32. ``extract_features`` returns the backbone maps ``res2..res5`` and the pixel-decoder outputs
(``mask_features`` [B, mask_dim, H/4, W/4], ``multi_scale_features`` 3 maps at strides 32/16/8,
``transformer_encoder_features`` [B, conv_dim, H/32, W/32]); ``forward`` also runs the interface.

:func:`build_find_model` builds the released variants (:data:`find_plugin.presets.
FIND_MODEL_PRESETS`) or any reduced configuration (plain dict sections, e.g. from
:func:`find_plugin.checkpoint.find_config_from_official` for an official config).
"""

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from .core.interface import FINDInterface
from .encoders.vision.focalnet import FocalNet
from .encoders.vision.pixel_decoder import TransformerEncoderPixelDecoder
from .encoders.vision.vision_model import FINDVisionModel
from .presets import resolve_find_config

__all__ = ["FINDModel", "build_find_model"]


class FINDModel(FINDVisionModel):
    """backbone -> pixel decoder -> FIND interface (keyword-only, already-built modules).

    Args:
        backbone: ``images [B, 3, H, W] -> {name: [B, C, h, w]}``.
        pixel_decoder: has ``forward_features(maps) -> (mask_features, enc, multi_scale)``.
        interface: a :class:`FINDInterface` (or compatible: ``(features, mask_features, tasks,
            class_bank=..., generator=...) -> outputs``).
        train_backbone / train_pixel_decoder: make that part trainable (default: both frozen,
            as FIND trains only the interface).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        interface: nn.Module,
        train_backbone: bool = False,
        train_pixel_decoder: bool = False,
    ):
        super().__init__(
            backbone=backbone,
            pixel_decoder=pixel_decoder,
            train_backbone=train_backbone,
            train_pixel_decoder=train_pixel_decoder,
        )
        self.interface = interface

    def forward(
        self,
        images: torch.Tensor,
        tasks: Optional[Mapping[str, Mapping]] = None,
        *,
        class_bank: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, Any]:
        """Run the vision side then the interface on ``tasks`` (see ``FINDInterface.forward``).

        Returns the interface outputs plus ``"vision"``: the :meth:`extract_features` dict."""
        vision = self.extract_features(images)
        out = self.interface(
            vision["multi_scale_features"],
            vision["mask_features"],
            tasks,
            class_bank=class_bank,
            generator=generator,
        )
        out["vision"] = vision
        return out


def build_find_model(
    preset: Optional[str] = None,
    *,
    backbone: Optional[Mapping[str, Any]] = None,
    pixel_decoder: Optional[Mapping[str, Any]] = None,
    interface: Optional[Mapping[str, Any]] = None,
    train_backbone: bool = False,
    train_pixel_decoder: bool = False,
) -> FINDModel:
    """Build a :class:`FINDModel` from a preset (``focalt_llama`` (default), ``focalt_unicl``,
    ``focall_llama``, ``focall_unicl``) and optional per-section overrides (kwargs of
    ``FocalNet``, ``TransformerEncoderPixelDecoder`` and ``FINDInterface``), see
    :func:`find_plugin.presets.resolve_find_config`."""
    cfg = resolve_find_config(
        preset, backbone=backbone, pixel_decoder=pixel_decoder, interface=interface
    )
    bb = FocalNet(**cfg["backbone"], frozen=not train_backbone)
    shapes = {name: (ch, bb.out_strides[name]) for name, ch in bb.out_channels.items()}
    pd = TransformerEncoderPixelDecoder(
        input_shape=shapes, frozen=not train_pixel_decoder, **cfg["pixel_decoder"]
    )
    return FINDModel(
        backbone=bb,
        pixel_decoder=pd,
        interface=FINDInterface(**cfg["interface"]),
        train_backbone=train_backbone,
        train_pixel_decoder=train_pixel_decoder,
    )
