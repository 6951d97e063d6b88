"""The criterion of a set of training tasks, from plain keyword settings (both adapters build it
here: detectron2 from ``cfg.MODEL.FIND.LOSS`` / ``MATCHER``, MMDetection from ``model.criterion``).
"""

from typing import Mapping, Optional, Sequence

from ..core.criterion import DEFAULT_WEIGHTS, LOSS_GROUPS, FINDCriterion
from ..core.matcher import HungarianMatcher
from .base import FINDTask
from .batch import criterion_loss_groups

__all__ = ["build_task_criterion"]


def build_task_criterion(
    tasks: Sequence[FINDTask],
    *,
    num_classes: int,
    weights: Optional[Mapping[str, float]] = None,
    cost_class: float = 2.0,
    cost_mask: float = 5.0,
    cost_dice: float = 5.0,
    matcher_num_points: int = 12544,
    no_object_weight: float = 0.1,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    grounding_text_weight: float = 2.0,
    grounding_class_weight: float = 0.5,
    fine_grained_weight: float = 0.5,
    deep_supervision: bool = True,
) -> FINDCriterion:
    """The :class:`FINDCriterion` of the training ``tasks`` (their loss groups), one matcher per
    task kind with the official costs. ``weights`` (names of :data:`DEFAULT_WEIGHTS`) override
    the defaults; only the weights of active groups are passed (the criterion rejects others).
    ``num_points`` / ``matcher_num_points`` = 0 use every pixel."""
    groups = list(criterion_loss_groups(tasks))
    active = {name for g in groups for name in LOSS_GROUPS[g]}
    merged = dict(DEFAULT_WEIGHTS)
    unknown = sorted(set(weights or {}) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise KeyError(
            f"unknown loss weight(s) {unknown}; expected some of {list(DEFAULT_WEIGHTS)}"
        )
    merged.update(weights or {})

    def matcher():
        return HungarianMatcher(
            cost_class=cost_class,
            cost_mask=cost_mask,
            cost_dice=cost_dice,
            num_points=matcher_num_points or None,
        )

    return FINDCriterion(
        num_classes=num_classes,
        losses=groups,
        weights={n: w for n, w in merged.items() if n in active},
        matcher=matcher(),
        grounding_matcher=matcher(),
        spatial_matcher=matcher(),
        interleave_matcher=matcher(),
        no_object_weight=no_object_weight,
        num_points=num_points or None,
        oversample_ratio=oversample_ratio,
        importance_sample_ratio=importance_sample_ratio,
        grounding_task_weights={"text": grounding_text_weight, "class": grounding_class_weight},
        fine_grained_weight=fine_grained_weight,
        deep_supervision=deep_supervision,
    )
