"""The one source of FIND model hyper-parameters (framework-free: no torch, no detectron2).

Every reader takes its values from here: :func:`find_plugin.model.build_find_model` (presets),
the detectron2 config (``cfg.MODEL.FIND_VISION.FOCAL`` / ``PIXEL_DECODER`` defaults and
``from_config``), the translation of official configs
(:mod:`find_plugin.checkpoint.official_config`) and the key-shape inference of official checkpoints.

A model config is three *sections*, plain dicts of constructor keywords:

* ``backbone``: :class:`~find_plugin.encoders.vision.FocalNet`,
* ``pixel_decoder``: :class:`~find_plugin.encoders.vision.TransformerEncoderPixelDecoder`
  (minus ``input_shape``, which comes from the backbone),
* ``interface``: :class:`~find_plugin.core.FINDInterface`.

For each section one table of :class:`ConfigKey` (``SECTION_KEYS``) names every keyword once with
its official FIND config key (dotted path in the official resolved config) and its detectron2 key
(under ``cfg.MODEL.FIND_VISION.<FOCAL | PIXEL_DECODER>``).
"""

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

__all__ = [
    "FOCALNET_KEYS",
    "PIXEL_DECODER_KEYS",
    "SECTION_KEYS",
    "FOCALNET_VARIANTS",
    "PIXEL_DECODER_PRESET",
    "FIND_MODEL_PRESETS",
    "resolve_find_config",
]


def _as_plain(value: Any) -> Any:
    """Official / cfg values -> section values: sequences become lists (JSON-friendly)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _minus_one(value: int) -> int:
    return int(value) - 1


def _first(value: Any) -> Any:
    return list(value)[0]


@dataclass(frozen=True)
class ConfigKey:
    """One constructor keyword and its names in the official and the detectron2 configs.

    Attributes:
        kwarg: keyword of the section's constructor.
        official: dotted path in the official resolved config (``MODEL.DECODER.HIDDEN_DIM``);
            ``None`` where the official code hard-codes the value.
        d2: key under the section's detectron2 node; ``None`` where it is not in the d2 config.
        doc: what it means (the d2 config documents its keys with it).
        from_official: official value -> keyword value (e.g. ``DEC_LAYERS - 1``).
    """

    kwarg: str
    official: Optional[str]
    d2: Optional[str]
    doc: str
    from_official: Callable[[Any], Any] = _as_plain


_FOCAL = "MODEL.BACKBONE.FOCAL."
FOCALNET_KEYS: Tuple[ConfigKey, ...] = (
    ConfigKey("style", "MODEL.BACKBONE.NAME", "STYLE", "'focal_dw' (FocalNet-T) or 'focal' (-L)"),
    ConfigKey("embed_dim", _FOCAL + "EMBED_DIM", "EMBED_DIM", "res2 channels, doubled per stage"),
    ConfigKey("depths", _FOCAL + "DEPTHS", "DEPTHS", "blocks per stage"),
    ConfigKey("focal_levels", _FOCAL + "FOCAL_LEVELS", "FOCAL_LEVELS", "focal levels per stage"),
    ConfigKey("focal_windows", _FOCAL + "FOCAL_WINDOWS", "FOCAL_WINDOWS", "level-1 kernel/stage"),
    ConfigKey("patch_size", _FOCAL + "PATCH_SIZE", "PATCH_SIZE", "stem stride"),
    ConfigKey("mlp_ratio", _FOCAL + "MLP_RATIO", "MLP_RATIO", "MLP hidden width / dim"),
    ConfigKey("drop_rate", _FOCAL + "DROP_RATE", "DROP_RATE", "dropout in MLP / modulation"),
    ConfigKey("drop_path_rate", _FOCAL + "DROP_PATH_RATE", "DROP_PATH_RATE", "max stoch. depth"),
    ConfigKey("patch_norm", _FOCAL + "PATCH_NORM", "PATCH_NORM", "LayerNorm after patch embeds"),
    ConfigKey(
        "use_conv_embed",
        _FOCAL + "USE_CONV_EMBED",
        "USE_CONV_EMBED",
        "overlapping conv embeddings (7x7/4 stem, 3x3/2 downsampling)",
    ),
    ConfigKey("use_postln", _FOCAL + "USE_POSTLN", "USE_POSTLN", "post-LayerNorm blocks"),
    ConfigKey(
        "use_postln_in_modulation",
        _FOCAL + "USE_POSTLN_IN_MODULATION",
        "USE_POSTLN_IN_MODULATION",
        "extra LayerNorm inside the modulation",
    ),
    ConfigKey(
        "scaling_modulator",
        _FOCAL + "SCALING_MODULATOR",
        "SCALING_MODULATOR",
        "divide the modulator by (focal levels + 1)",
    ),
    ConfigKey(
        "use_layerscale",
        _FOCAL + "USE_LAYERSCALE",
        "USE_LAYERSCALE",
        "learnable per-channel residual scales gamma_1 / gamma_2",
    ),
    # detectron2 names output maps instead (cfg.MODEL.FIND_VISION.FOCAL.OUT_FEATURES).
    ConfigKey("out_indices", _FOCAL + "OUT_INDICES", None, "stages returned (0..3 = res2..res5)"),
)

_ENC, _DEC = "MODEL.ENCODER.", "MODEL.DECODER."
PIXEL_DECODER_KEYS: Tuple[ConfigKey, ...] = (
    ConfigKey("conv_dim", _ENC + "CONVS_DIM", "CONVS_DIM", "FPN / multi-scale feature width"),
    ConfigKey("mask_dim", _ENC + "MASK_DIM", "MASK_DIM", "mask_features width"),
    ConfigKey("norm", _ENC + "NORM", "NORM", "'GN' (GroupNorm 32) or '' (no norm)"),
    ConfigKey(
        "transformer_enc_layers",
        _ENC + "TRANSFORMER_ENC_LAYERS",
        "TRANSFORMER_ENC_LAYERS",
        "encoder layers on the coarsest map",
    ),
    # The official pixel decoder reads its encoder heads / FFN / dropout / norm from the decoder.
    ConfigKey("transformer_nheads", _DEC + "NHEADS", "NHEADS", "encoder attention heads"),
    ConfigKey(
        "transformer_dim_feedforward", _DEC + "DIM_FEEDFORWARD", "DIM_FEEDFORWARD", "encoder FFN"
    ),
    ConfigKey("transformer_dropout", _DEC + "DROPOUT", "DROPOUT", "encoder dropout"),
    ConfigKey("transformer_pre_norm", _DEC + "PRE_NORM", "PRE_NORM", "pre-norm encoder layers"),
    ConfigKey("num_feature_levels", None, "NUM_FEATURE_LEVELS", "maps in multi_scale_features"),
)

INTERFACE_KEYS: Tuple[ConfigKey, ...] = (
    ConfigKey("hidden_dim", _DEC + "HIDDEN_DIM", None, "interface width"),
    ConfigKey("num_heads", _DEC + "NHEADS", None, "attention heads"),
    ConfigKey("dim_feedforward", _DEC + "DIM_FEEDFORWARD", None, "FFN width"),
    # DEC_LAYERS counts the prediction on the initial queries; the last query row is the image
    # query.
    ConfigKey("num_layers", _DEC + "DEC_LAYERS", None, "interface layers", _minus_one),
    ConfigKey("num_queries", _DEC + "NUM_OBJECT_QUERIES", None, "object queries", _minus_one),
    ConfigKey("mask_dim", _ENC + "MASK_DIM", None, "mask embedding width"),
    ConfigKey("dim_proj", "MODEL.DIM_PROJ", None, "joint embedding width"),
    ConfigKey("dim_text", "MODEL.TEXT.WIDTH", None, "language-model token width"),
    ConfigKey("num_memories", "ATTENTION_ARCH.SPATIAL_MEMORIES", None, "spatial memories"),
    # One length per level in the official config; every released config uses one value.
    ConfigKey("max_spatial_points", _DEC + "MAX_SPATIAL_LEN", None, "visual-prompt points", _first),
    # The interface consumes the pixel decoder's multi-scale maps (CONVS_DIM channels).
    ConfigKey("in_channels", _ENC + "CONVS_DIM", None, "channels of the multi-scale maps"),
    ConfigKey(
        "enforce_input_proj", _DEC + "ENFORCE_INPUT_PROJ", None, "1x1 input proj. always", bool
    ),
)

SECTION_KEYS: Dict[str, Tuple[ConfigKey, ...]] = {
    "backbone": FOCALNET_KEYS,
    "pixel_decoder": PIXEL_DECODER_KEYS,
    "interface": INTERFACE_KEYS,
}

# The two FocalNet variants of FIND (configs/find/focalt_* and focall_* of the official
# repository); every FOCALNET_KEYS keyword is given, so the d2 defaults come from here too.
_FOCALT = dict(
    style="focal_dw",
    embed_dim=96,
    depths=[2, 2, 6, 2],
    focal_levels=[3, 3, 3, 3],
    focal_windows=[3, 3, 3, 3],
    patch_size=4,
    mlp_ratio=4.0,
    drop_rate=0.0,
    drop_path_rate=0.3,
    patch_norm=True,
    use_conv_embed=True,
    use_postln=True,
    use_postln_in_modulation=False,
    scaling_modulator=True,
    use_layerscale=True,
    out_indices=[0, 1, 2, 3],
)
FOCALNET_VARIANTS: Dict[str, Dict[str, Any]] = {
    "focalt": _FOCALT,
    "focall": dict(
        _FOCALT, style="focal", embed_dim=192, depths=[2, 2, 18, 2], focal_levels=[4, 4, 4, 4]
    ),
}
PIXEL_DECODER_PRESET: Dict[str, Any] = dict(
    conv_dim=512,
    mask_dim=512,
    norm="GN",
    transformer_enc_layers=6,
    transformer_nheads=8,
    transformer_dim_feedforward=2048,
    transformer_dropout=0.0,
    transformer_pre_norm=False,
    num_feature_levels=3,
)
INTERFACE_PRESET: Dict[str, Any] = dict(
    hidden_dim=512,
    num_heads=8,
    dim_feedforward=2048,
    num_layers=9,
    num_queries=100,
    mask_dim=512,
    dim_proj=512,
    dim_text=4096,  # LLaMA-7B; UniCL: 512
    num_memories=32,
    max_spatial_points=512,
    in_channels=512,
    enforce_input_proj=False,
)
_TEXT_WIDTH = {"llama": 4096, "unicl": 512}

# Released FIND variants: "<focalnet variant>_<language model>".
FIND_MODEL_PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    f"{vision}_{lang}": dict(
        backbone=FOCALNET_VARIANTS[vision],
        pixel_decoder=PIXEL_DECODER_PRESET,
        interface=dict(INTERFACE_PRESET, dim_text=width),
    )
    for vision in ("focalt", "focall")
    for lang, width in _TEXT_WIDTH.items()
}


def resolve_find_config(
    preset: Optional[str] = None,
    *,
    backbone: Optional[Mapping[str, Any]] = None,
    pixel_decoder: Optional[Mapping[str, Any]] = None,
    interface: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Dict[str, Any]]:
    """Preset (default ``"focalt_llama"``) with per-section keyword overrides -> a deep copy of the
    full config ``{"backbone": {...}, "pixel_decoder": {...}, "interface": {...}}``."""
    name = preset or "focalt_llama"
    if name not in FIND_MODEL_PRESETS:
        raise KeyError(f"unknown FIND model preset {name!r}; known {sorted(FIND_MODEL_PRESETS)}")
    cfg = copy.deepcopy(FIND_MODEL_PRESETS[name])
    for section, over in (
        ("backbone", backbone),
        ("pixel_decoder", pixel_decoder),
        ("interface", interface),
    ):
        cfg[section].update(copy.deepcopy(dict(over or {})))
    return cfg
