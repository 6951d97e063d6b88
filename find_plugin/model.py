"""Framework-free composite FIND model: frozen backbone -> frozen pixel decoder -> FIND interface.

:class:`FINDModel` is the layout of find_plugin checkpoints: its ``state_dict()`` keys are
``backbone.*`` (FocalNet), ``pixel_decoder.*`` (X-Decoder ``transformer_encoder_fpn``) and
``interface.*`` (:class:`~find_plugin.core.FINDInterface`, incl. ``interface.lang_proj`` and
``interface.logit_scale``). The detectron2 / mmdet meta-architectures hold the same three attribute
names, so one checkpoint loads everywhere. The language model is NOT part of it (loaded from its
own weights; the interface consumes token features, see ``FINDInterface.project_tokens``).

Shapes: ``images`` [B, 3, H, W] normalised (``(x - mean) / std`` on 0..255 RGB), H and W multiples
of 32. ``extract_features`` returns the backbone maps ``res2..res5`` and the pixel-decoder outputs
(``mask_features`` [B, mask_dim, H/4, W/4], ``multi_scale_features`` 3 maps at strides 32/16/8,
``transformer_encoder_features`` [B, conv_dim, H/32, W/32]); ``forward`` also runs the interface.

:func:`build_find_model` builds the released variants (``FIND_MODEL_PRESETS``) or any reduced
configuration (plain dict sections, e.g. from :func:`find_config_from_official` for the official
``config.json`` of the parity fixture).
"""

import copy
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from .core.interface import FINDInterface
from .encoders.vision.focalnet import FocalNet
from .encoders.vision.freezing import freeze_
from .encoders.vision.pixel_decoder import TransformerEncoderPixelDecoder
from .encoders.vision.vision_model import run_vision

__all__ = [
    "FINDModel",
    "FIND_MODEL_PRESETS",
    "build_find_model",
    "find_config_from_official",
    "resolve_find_config",
]

# Released FIND variants (configs/find/*.yaml of the official repository). Sections are the
# keyword arguments of FocalNet / TransformerEncoderPixelDecoder (minus input_shape) /
# FINDInterface.
_FOCALT = dict(style="focal_dw", embed_dim=96, depths=[2, 2, 6, 2], focal_levels=[3, 3, 3, 3])
_FOCALL = dict(style="focal", embed_dim=192, depths=[2, 2, 18, 2], focal_levels=[4, 4, 4, 4])
_PIXEL = dict(conv_dim=512, mask_dim=512, norm="GN", transformer_enc_layers=6)
_IFACE = dict(hidden_dim=512, num_heads=8, dim_feedforward=2048, num_layers=9, num_queries=100)
FIND_MODEL_PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "focalt_llama": dict(backbone=_FOCALT, pixel_decoder=_PIXEL, interface=dict(_IFACE)),
    "focalt_unicl": dict(backbone=_FOCALT, pixel_decoder=_PIXEL, interface=dict(_IFACE)),
    "focall_llama": dict(backbone=_FOCALL, pixel_decoder=_PIXEL, interface=dict(_IFACE)),
    "focall_unicl": dict(backbone=_FOCALL, pixel_decoder=_PIXEL, interface=dict(_IFACE)),
}
for _name, _cfg in FIND_MODEL_PRESETS.items():
    _cfg["interface"].update(
        mask_dim=512, dim_proj=512, dim_text=4096 if "llama" in _name else 512, num_memories=32
    )


class FINDModel(nn.Module):
    """backbone -> pixel decoder -> FIND interface (keyword-only, already-built modules).

    Args:
        backbone: ``images [B, 3, H, W] -> {name: [B, C, h, w]}``.
        pixel_decoder: has ``forward_features(maps) -> (mask_features, enc, multi_scale)``.
        interface: a :class:`FINDInterface` (or compatible: ``(features, mask_features, tasks,
            class_bank=..., generator=...) -> outputs``).
        freeze_vision: freeze backbone and pixel decoder (FIND trains only the interface).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        interface: nn.Module,
        freeze_vision: bool = True,
    ):
        super().__init__()
        if not callable(getattr(pixel_decoder, "forward_features", None)):
            raise TypeError(
                "FINDModel: pixel_decoder must define forward_features(features), "
                f"got {type(pixel_decoder).__name__}"
            )
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.interface = interface
        if freeze_vision:
            freeze_(backbone)
            freeze_(pixel_decoder)

    def extract_features(self, images: torch.Tensor) -> Dict[str, Any]:
        """``images`` [B, 3, H, W] -> dict ``features`` (backbone maps), ``mask_features``,
        ``transformer_encoder_features``, ``multi_scale_features`` (see module docstring)."""
        return run_vision(self.backbone, self.pixel_decoder, images)

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


def resolve_find_config(
    preset: Optional[str] = None,
    *,
    backbone: Optional[Mapping[str, Any]] = None,
    pixel_decoder: Optional[Mapping[str, Any]] = None,
    interface: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Dict[str, Any]]:
    """Preset (default ``"focalt_llama"``) with per-section keyword overrides -> full config."""
    name = preset or "focalt_llama"
    if name not in FIND_MODEL_PRESETS:
        raise KeyError(f"unknown FIND model preset {name!r}; known {sorted(FIND_MODEL_PRESETS)}")
    cfg = copy.deepcopy(FIND_MODEL_PRESETS[name])
    for section, over in (
        ("backbone", backbone),
        ("pixel_decoder", pixel_decoder),
        ("interface", interface),
    ):
        cfg[section].update(dict(over or {}))
    return cfg


def build_find_model(
    preset: Optional[str] = None,
    *,
    backbone: Optional[Mapping[str, Any]] = None,
    pixel_decoder: Optional[Mapping[str, Any]] = None,
    interface: Optional[Mapping[str, Any]] = None,
    freeze_vision: bool = True,
) -> FINDModel:
    """Build a :class:`FINDModel` from a preset (``focalt_llama`` (default), ``focalt_unicl``,
    ``focall_llama``, ``focall_unicl``) and optional per-section overrides (kwargs of
    ``FocalNet``, ``TransformerEncoderPixelDecoder`` and ``FINDInterface``)."""
    cfg = resolve_find_config(
        preset, backbone=backbone, pixel_decoder=pixel_decoder, interface=interface
    )
    bb = FocalNet(**cfg["backbone"], frozen=freeze_vision)
    shapes = {name: (ch, bb.out_strides[name]) for name, ch in bb.out_channels.items()}
    pd_kwargs = dict(cfg["pixel_decoder"])
    pd_kwargs.setdefault("transformer_nheads", 8)
    pd_kwargs.setdefault("transformer_dim_feedforward", 2048)
    pd = TransformerEncoderPixelDecoder(input_shape=shapes, frozen=freeze_vision, **pd_kwargs)
    iface = FINDInterface(**cfg["interface"])
    return FINDModel(backbone=bb, pixel_decoder=pd, interface=iface, freeze_vision=freeze_vision)


def find_config_from_official(official: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Official resolved config (``config.json["resolved"]`` of the parity fixture, i.e. the
    ``MODEL`` and ``MODEL.DECODER`` sub-configs) -> ``build_find_model`` sections.

    Only FocalNet backbones and the ``transformer_encoder_fpn`` pixel decoder are supported.
    """
    model = official.get("MODEL")
    dec = official.get("MODEL.DECODER") or (model or {}).get("DECODER")
    if not model or not dec:
        raise KeyError("official config needs 'MODEL' and 'MODEL.DECODER' (or MODEL.DECODER)")
    bb, enc = model["BACKBONE"], model["ENCODER"]
    if bb["NAME"] not in ("focal_dw", "focal"):
        raise ValueError(f"unsupported official backbone {bb['NAME']!r} (FocalNet only)")
    if enc["NAME"] != "transformer_encoder_fpn":
        raise ValueError(f"unsupported official pixel decoder {enc['NAME']!r}")
    f = bb["FOCAL"]
    spatial = official.get("ATTENTION_ARCH.SPATIAL_MEMORIES")
    if spatial is None:
        spatial = official.get("ATTENTION_ARCH", {}).get("SPATIAL_MEMORIES", 32)
    return {
        "backbone": dict(
            style=bb["NAME"],
            embed_dim=f["EMBED_DIM"],
            depths=list(f["DEPTHS"]),
            focal_levels=list(f["FOCAL_LEVELS"]),
            focal_windows=list(f["FOCAL_WINDOWS"]),
            patch_size=f["PATCH_SIZE"],
            mlp_ratio=f["MLP_RATIO"],
            drop_rate=f["DROP_RATE"],
            drop_path_rate=f["DROP_PATH_RATE"],
            patch_norm=f["PATCH_NORM"],
            use_conv_embed=f["USE_CONV_EMBED"],
            use_postln=f["USE_POSTLN"],
            use_postln_in_modulation=f["USE_POSTLN_IN_MODULATION"],
            scaling_modulator=f["SCALING_MODULATOR"],
            use_layerscale=f["USE_LAYERSCALE"],
            out_indices=list(f["OUT_INDICES"]),
        ),
        "pixel_decoder": dict(
            conv_dim=enc["CONVS_DIM"],
            mask_dim=enc["MASK_DIM"],
            norm=enc["NORM"],
            transformer_enc_layers=enc["TRANSFORMER_ENC_LAYERS"],
            transformer_nheads=dec["NHEADS"],
            transformer_dim_feedforward=dec["DIM_FEEDFORWARD"],
            transformer_pre_norm=dec.get("PRE_NORM", False),
        ),
        "interface": dict(
            hidden_dim=dec["HIDDEN_DIM"],
            num_heads=dec["NHEADS"],
            dim_feedforward=dec["DIM_FEEDFORWARD"],
            # DEC_LAYERS counts the prediction on the initial queries; the last query row is the
            # image query.
            num_layers=dec["DEC_LAYERS"] - 1,
            num_queries=dec["NUM_OBJECT_QUERIES"] - 1,
            mask_dim=enc["MASK_DIM"],
            dim_proj=model["DIM_PROJ"],
            dim_text=model["TEXT"]["WIDTH"],
            num_memories=spatial,
            max_spatial_points=list(dec.get("MAX_SPATIAL_LEN", [512]))[0],
        ),
    }
