"""Hungarian matching of proposals to targets, one matcher per task (spec §3.1).

Every matcher uses the same cost
``C = cost_class * C_class + cost_mask * C_bce + cost_dice * C_dice`` on [Q, N] for one image, where
the mask costs are computed on ``num_points`` uniformly random points shared by every pair, and the
class cost depends on the task:

* default (object proposals <-> panoptic GT): ``-softmax(pred_logits, classes)[:, gt_label]``;
* grounding / spatial / interleave: ``-softmax(logits, dim=proposals)`` where ``logits`` [Q, N] are
  the task logits of :mod:`find_plugin.core.similarity` (column j = GT item j).

Official defaults are class/mask/dice = 2 / 5 / 5 for all four matchers. The official code builds the
spatial matcher from ``COST_SPATIAL`` but then ignores it (it reuses the default weights); here each
matcher honours the weights it is constructed with.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .point_losses import grid_points, pairwise_bce_cost, pairwise_dice_cost, point_sample

__all__ = ["HungarianMatcher", "MatchIndices", "default_class_cost", "proposal_class_cost"]

# (proposal indices, target indices), both int64 [n_matched]; d2/DETR convention.
MatchIndices = Tuple[torch.Tensor, torch.Tensor]


def default_class_cost(pred_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-softmax over classes`` at the GT labels: pred_logits [Q, K+1], labels [N] -> [Q, N]."""
    return -pred_logits.softmax(-1)[:, labels]


def proposal_class_cost(logits: torch.Tensor) -> torch.Tensor:
    """``-softmax over proposals``: logits [Q, N] (column = GT item) -> [Q, N]."""
    return -logits.softmax(0)


class HungarianMatcher:
    """One-to-one assignment of Q proposals to N <= Q targets per image.

    Args:
        cost_class: weight of the class (or proposal-softmax) cost.
        cost_mask: weight of the point-sampled BCE cost.
        cost_dice: weight of the point-sampled dice cost.
        num_points: number of shared uniform random points; ``None`` = every pixel centre of the
            prediction grid (deterministic).
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: Optional[int] = 12544,
    ):
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice cannot all be 0")
        if num_points is not None and num_points <= 0:
            raise ValueError(f"num_points must be positive or None, got {num_points}")
        self.cost_class = float(cost_class)
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.num_points = num_points

    def __repr__(self) -> str:
        return (
            f"HungarianMatcher(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points})"
        )

    @torch.no_grad()
    def cost_matrix(
        self, class_cost: torch.Tensor, pred_masks: torch.Tensor, tgt_masks: torch.Tensor
    ) -> torch.Tensor:
        """Total cost [Q, N].

        Args:
            class_cost: [Q, N] (already negated probabilities).
            pred_masks: [Q, h, w] mask logits.
            tgt_masks: [N, H, W] binary masks (any resolution; compared at normalised points).
        """
        num_q, num_t = pred_masks.shape[0], tgt_masks.shape[0]
        if class_cost.shape != (num_q, num_t):
            raise ValueError(
                f"class cost must be [Q={num_q}, N={num_t}], got {tuple(class_cost.shape)}"
            )
        src = pred_masks.float().unsqueeze(1)
        tgt = tgt_masks.to(src.dtype).unsqueeze(1)
        if self.num_points is None:
            coords = grid_points(src.shape[-2], src.shape[-1], device=src.device)
        else:
            coords = torch.rand(self.num_points, 2, device=src.device)
        src_pts = point_sample(src, coords.expand(num_q, -1, -1))[:, 0]
        tgt_pts = point_sample(tgt, coords.expand(num_t, -1, -1))[:, 0]
        return (
            self.cost_class * class_cost.float()
            + self.cost_mask * pairwise_bce_cost(src_pts, tgt_pts)
            + self.cost_dice * pairwise_dice_cost(src_pts, tgt_pts)
        )

    @torch.no_grad()
    def match_one(
        self, class_cost: torch.Tensor, pred_masks: torch.Tensor, tgt_masks: torch.Tensor
    ) -> MatchIndices:
        """Assignment for one image; see :meth:`cost_matrix` for shapes. Sorted by proposal index."""
        device = pred_masks.device
        num_q, num_t = pred_masks.shape[0], tgt_masks.shape[0]
        if num_t > num_q:
            raise ValueError(f"cannot match {num_t} targets to only {num_q} proposals")
        if num_t == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty.clone()
        cost = self.cost_matrix(class_cost, pred_masks, tgt_masks).cpu().numpy()
        if not np.isfinite(cost).all():
            raise FloatingPointError("matching cost contains NaN/inf (check the predictions)")
        rows, cols = linear_sum_assignment(cost)
        return (
            torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device),
        )

    @torch.no_grad()
    def match_default(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: Sequence[dict]
    ) -> List[MatchIndices]:
        """Object proposals vs panoptic GT.

        Args:
            pred_logits: [B, Q, K+1] (background = last class).
            pred_masks: [B, Q, h, w].
            targets: per image ``{"labels": [N] int64 in [0, K), "masks": [N, H, W]}``.
        """
        _check_batch(pred_masks, targets)
        out = []
        for b, tgt in enumerate(targets):
            labels = _require(tgt, "labels", b).long()
            cost = default_class_cost(pred_logits[b].float(), labels)
            out.append(self.match_one(cost, pred_masks[b], _require(tgt, "masks", b)))
        return out

    @torch.no_grad()
    def match_by_logits(
        self,
        logits: Sequence[torch.Tensor],
        pred_masks: torch.Tensor,
        tgt_masks: Sequence[torch.Tensor],
    ) -> List[MatchIndices]:
        """Grounding / spatial / interleave: cost from ``-softmax over proposals`` of the task logits.

        Args:
            logits: per image [Q, N_b] task logits (column j = GT item j).
            pred_masks: [B, Q, h, w].
            tgt_masks: per image [N_b, H, W].
        """
        if len(logits) != pred_masks.shape[0] or len(tgt_masks) != pred_masks.shape[0]:
            raise ValueError(
                f"need one logits/target entry per image: B={pred_masks.shape[0]}, "
                f"got {len(logits)} logits and {len(tgt_masks)} target mask sets"
            )
        return [
            self.match_one(proposal_class_cost(lg.float()), pred_masks[b], tgt_masks[b])
            for b, lg in enumerate(logits)
        ]


def _require(target: dict, key: str, index: int):
    if key not in target:
        raise KeyError(f"targets[{index}] has no key '{key}' (keys: {sorted(target)})")
    return target[key]


def _check_batch(pred_masks: torch.Tensor, targets: Sequence[dict]) -> None:
    if pred_masks.dim() != 4:
        raise ValueError(f"pred masks must be [B, Q, h, w], got {tuple(pred_masks.shape)}")
    if len(targets) != pred_masks.shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {pred_masks.shape[0]}")
