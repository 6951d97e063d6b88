"""Framework-free FIND core (torch, numpy, scipy only): prototypes, interface, heads, sampler,
class bank, matchers, losses and post-processing."""

from .attention_mask import SequenceLayout
from .class_bank import (
    EVAL_TEMPLATE,
    TRAIN_TEMPLATES,
    ClassBank,
    build_class_bank,
    class_prompts,
    clean_class_name,
)
from .criterion import FINDCriterion
from .entity_map import NO_ENTITY, entity_token_masks, token_entity_map
from .heads import PredictionHeads, cosine_logits
from .interface import FINDInterface
from .matcher import HungarianMatcher
from .official_keys import convert_official_interface, interface_key_table
from .postprocess import (
    grounding_pick,
    instance_inference,
    interactive_pick,
    interleave_pick,
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
from .retrieval import fine_grained_loss, itc_loss, recall_at_k, retrieval_scores
from .sampler import VisualPromptSampler, sample_prompt_points, sample_prompts

__all__ = [
    "build_class_bank",
    "class_prompts",
    "ClassBank",
    "clean_class_name",
    "convert_official_interface",
    "cosine_logits",
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
    "interactive_pick",
    "interface_key_table",
    "interleave_pick",
    "itc_loss",
    "list_prototypes",
    "NO_ENTITY",
    "panoptic_inference",
    "PredictionHeads",
    "recall_at_k",
    "register_prototype",
    "resize_mask_logits",
    "retrieval_scores",
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
