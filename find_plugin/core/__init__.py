"""Framework-free FIND core (torch, numpy, scipy only): prototypes, interface, heads, sampler,
class bank, matchers, losses and post-processing.

Conventions (one for the whole package; see :mod:`find_plugin.core.conventions`):

* booleans name their polarity: ``*_padding`` True where padded, ``*_valid`` True where real,
  ``*_allowed`` / ``*_blocked`` for attention; no bare ``*_mask`` for padding;
* item indexes (``query_index``, ``token_index``, ``token_entity``, point ``index``) are ids >= 0,
  with ``NO_ITEM`` = -1 for padding and "no item" (any negative value reads as ``NO_ITEM``);
* class ids are contiguous in [0, K) with the background / no-object class at K (last column of
  ``pred_logits``);
* feature levels: level 0 = stride 32, then 16, 8; mask features and masks at stride 4.
"""

from .attention_mask import SequenceLayout
from .class_bank import (
    EVAL_TEMPLATE,
    TRAIN_TEMPLATES,
    ClassBank,
    build_class_bank,
    class_prompts,
    clean_class_name,
)
from .conventions import NO_ITEM, no_item
from .criterion import FINDCriterion
from .entity_map import entity_token_masks, token_entity_map
from .heads import PredictionHeads
from .interface import FINDInterface
from .matcher import HungarianMatcher
from .postprocess import (
    RESIZE_RULES,
    grounding_pick,
    instance_inference,
    interactive_pick,
    interleave_pick,
    mask_boxes,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)
from .prototypes import (
    CrossRule,
    TaskPrototype,
    VariableSpec,
    get_prototype,
    list_prototypes,
    register_prototype,
    unregister_prototype,
)
from .retrieval import fine_grained_loss, itc_loss
from .sampler import VisualPromptSampler, sample_prompt_points, sample_prompts
from .text_pass import zero_feature_pass
from .variables import (
    InputContext,
    VariableRows,
    list_input_kinds,
    register_input_kind,
    unregister_input_kind,
)

__all__ = [
    "InputContext",
    "list_input_kinds",
    "NO_ITEM",
    "no_item",
    "register_input_kind",
    "RESIZE_RULES",
    "unregister_input_kind",
    "VariableRows",
    "zero_feature_pass",
    "build_class_bank",
    "class_prompts",
    "ClassBank",
    "clean_class_name",
    "CrossRule",
    "entity_token_masks",
    "EVAL_TEMPLATE",
    "FINDCriterion",
    "FINDInterface",
    "fine_grained_loss",
    "get_prototype",
    "grounding_pick",
    "HungarianMatcher",
    "instance_inference",
    "mask_boxes",
    "interactive_pick",
    "interleave_pick",
    "itc_loss",
    "list_prototypes",
    "panoptic_inference",
    "PredictionHeads",
    "register_prototype",
    "resize_mask_logits",
    "sample_prompt_points",
    "sample_prompts",
    "semantic_inference",
    "SequenceLayout",
    "TaskPrototype",
    "token_entity_map",
    "TRAIN_TEMPLATES",
    "unregister_prototype",
    "VariableSpec",
    "VisualPromptSampler",
]
