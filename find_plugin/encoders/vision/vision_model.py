"""Frozen vision side of FIND: backbone + pixel decoder, and official-checkpoint key mapping.

:class:`FINDVisionModel` runs ``images [B, 3, H, W] -> backbone maps -> pixel decoder`` and returns

* ``features``: the backbone dict (``res2..res5``),
* ``mask_features`` ``[B, mask_dim, H/4, W/4]``, ``multi_scale_features`` (3 maps, level 0 =
  stride 32), ``transformer_encoder_features`` ``[B, conv_dim, H/32, W/32]``.

Both parts are frozen by default; :class:`FINDVisionModel` keeps frozen parts in eval mode when a
parent calls ``.train()``. ``train_backbone`` / ``train_pixel_decoder`` switch a part to trainable
(e.g. the pixel decoder on top of EfficientNet-Lite0, for which no pretrained decoder exists).

Official checkpoints store ``backbone.*`` and ``sem_seg_head.pixel_decoder.*`` (optionally behind a
``model.`` / ``module.model.`` prefix); :func:`official_to_vision_state_dict` maps them to our
names.
"""

from typing import Dict, Mapping, Tuple

import torch
from torch import nn

from .freezing import FrozenTrainMixin, freeze_, unfreeze_

__all__ = [
    "FINDVisionModel",
    "OFFICIAL_PREFIXES",
    "official_to_vision_state_dict",
    "load_official_vision_weights",
]

# our sub-module name -> official key prefix (after the optional wrapper prefixes)
OFFICIAL_PREFIXES = {"backbone": "backbone.", "pixel_decoder": "sem_seg_head.pixel_decoder."}
_WRAPPER_PREFIXES = ("module.model.", "model.")


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
        self.set_trainable(backbone=train_backbone, pixel_decoder=train_pixel_decoder)

    def set_trainable(self, *, backbone: bool, pixel_decoder: bool) -> "FINDVisionModel":
        """Freeze (False) or unfreeze (True) each part; frozen parts are put in eval mode."""
        for part, trainable in ((self.backbone, backbone), (self.pixel_decoder, pixel_decoder)):
            if trainable:
                unfreeze_(part)
                part.train(self.training)
            else:
                freeze_(part)
        return self

    def forward(self, images: torch.Tensor) -> Dict[str, object]:
        """``images`` ``[B, 3, H, W]`` (normalised, H, W multiples of 32) -> output dict above."""
        features = self.backbone(images)
        mask, enc, multi_scale = self.pixel_decoder.forward_features(features)
        return {
            "features": features,
            "mask_features": mask,
            "transformer_encoder_features": enc,
            "multi_scale_features": multi_scale,
        }


def official_to_vision_state_dict(
    state_dict: Mapping[str, torch.Tensor], parts: Tuple[str, ...] = ("backbone", "pixel_decoder")
) -> Dict[str, torch.Tensor]:
    """Select and rename official keys: ``backbone.X -> backbone.X``,
    ``sem_seg_head.pixel_decoder.X -> pixel_decoder.X`` (other keys are dropped)."""
    unknown = [p for p in parts if p not in OFFICIAL_PREFIXES]
    if unknown:
        raise ValueError(f"parts must be in {list(OFFICIAL_PREFIXES)}, got {unknown}")
    out = {}
    for key, value in state_dict.items():
        for wrapper in _WRAPPER_PREFIXES:
            if key.startswith(wrapper):
                key = key[len(wrapper) :]
                break
        for part in parts:
            prefix = OFFICIAL_PREFIXES[part]
            if key.startswith(prefix):
                out[f"{part}.{key[len(prefix):]}"] = value
    return out


def load_official_vision_weights(
    model: FINDVisionModel, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
):
    """Load an official FIND/X-Decoder/SEEM state_dict into ``model``.

    With ``strict=True`` any missing/unexpected key or shape mismatch raises a ``RuntimeError``
    listing them. Returns torch's ``_IncompatibleKeys``.
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    mapped = official_to_vision_state_dict(state_dict)
    if not mapped:
        raise KeyError(
            "official state_dict has no 'backbone.*' or 'sem_seg_head.pixel_decoder.*' keys "
            f"(first keys: {list(state_dict)[:5]})"
        )
    return model.load_state_dict(mapped, strict=strict)
