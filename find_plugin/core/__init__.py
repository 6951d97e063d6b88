"""Framework-free FIND core (torch only): prototypes, interface, heads, sampler, class bank."""

from .attention_mask import SequenceLayout
from .class_bank import (
    EVAL_TEMPLATE,
    TRAIN_TEMPLATES,
    ClassBank,
    build_class_bank,
    class_prompts,
    clean_class_name,
)
from .entity_map import NO_ENTITY, entity_token_masks, token_entity_map
from .heads import PredictionHeads, cosine_logits
from .interface import FINDInterface
from .official_keys import convert_official_interface, interface_key_table
from .prototypes import (
    CrossRule,
    TaskPrototype,
    VariableSpec,
    get_prototype,
    list_prototypes,
    register_prototype,
    unregister_prototype,
)
from .sampler import VisualPromptSampler, sample_prompt_points, sample_prompts

__all__ = [
    "ClassBank",
    "CrossRule",
    "EVAL_TEMPLATE",
    "FINDInterface",
    "NO_ENTITY",
    "PredictionHeads",
    "SequenceLayout",
    "TRAIN_TEMPLATES",
    "TaskPrototype",
    "VariableSpec",
    "VisualPromptSampler",
    "build_class_bank",
    "class_prompts",
    "clean_class_name",
    "convert_official_interface",
    "cosine_logits",
    "entity_token_masks",
    "get_prototype",
    "interface_key_table",
    "list_prototypes",
    "register_prototype",
    "sample_prompt_points",
    "sample_prompts",
    "token_entity_map",
    "unregister_prototype",
]
