"""Hungarian matching of proposals to targets, one matcher per task (spec §3.1).

Every matcher uses the same cost
``C = cost_class * C_class + cost_mask * C_bce + cost_dice * C_dice`` on [Q, N] for one image, where
the mask costs are computed on ``num_points`` uniformly random points drawn per image (one
[1, P, 2] draw per image, in batch order, as the official matcher) and shared by all pairs of that
image, and the class cost depends on the task:

* default (object proposals <-> panoptic GT): ``-softmax(pred_logits, classes)[:, gt_label]``;
* grounding / spatial / interleave: ``-softmax(logits, dim=proposals)`` where ``logits`` [Q, N] are
  the task logits of :mod:`find_plugin.core.similarity` (column j = GT item j).

Official defaults are class/mask/dice = 2 / 5 / 5 for all four matchers. The official code builds
the spatial matcher from ``COST_SPATIAL`` but then ignores it (it reuses the default weights);
here each matcher honours the weights it is constructed with (config values are respected).

Re-implements (facts from the papers and code, no code copied):
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
- DETR: Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020
  (github.com/facebookresearch/detr).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .mask_logits import MaskLogits, as_mask_logits
from .point_losses import RandFn, grid_points, pairwise_bce_cost, pairwise_dice_cost, point_sample

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
            raise ValueError(
                "HungarianMatcher: cost_class, cost_mask and cost_dice cannot all be 0"
            )
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
    def mask_costs(
        self,
        pred_masks,
        tgt_masks: Sequence[torch.Tensor],
        rand_fn: Optional[RandFn] = None,
    ) -> List[torch.Tensor]:
        """Weighted mask costs ``cost_mask * BCE + cost_dice * Dice`` per image.

        Each image draws its own ``num_points`` uniform points ([1, P, 2], in batch order, also
        for an image without targets), shared by all its (proposal, target) pairs, as the
        official matcher does.

        Args:
            pred_masks: [B, Q, h, w] mask logits, or their
                :class:`~find_plugin.core.mask_logits.FactoredMasks` (the mask features are read
                at the points, then multiplied with the embeddings: no full-resolution masks).
            tgt_masks: per image [N_b, H_b, W_b] binary masks (any resolution).
            rand_fn: source of the uniform draws (default :func:`torch.rand`), see
                :data:`~find_plugin.core.point_losses.RandFn`.
        Returns:
            per image [Q, N_b].
        """
        rand_fn = torch.rand if rand_fn is None else rand_fn
        masks = as_mask_logits(pred_masks)
        num_q, device = masks.num_rows, masks.device
        out = []
        for b, tgt in enumerate(tgt_masks):
            if self.num_points is None:
                coords = grid_points(*masks.size, device=device)
            else:
                coords = rand_fn((1, self.num_points, 2), device=device, dtype=torch.float32)[0]
            if tgt.shape[0] == 0:
                out.append(torch.zeros(num_q, 0, dtype=torch.float32, device=device))
                continue
            src_pts = masks.sample(b, coords)  # [Q, P], the rows read at the shared points
            t = tgt.to(device=device, dtype=torch.float32)[None]
            tgt_pts = point_sample(t, coords[None])[0]  # [N_b, P]
            cost = self.cost_mask * pairwise_bce_cost(src_pts, tgt_pts)
            out.append(cost + self.cost_dice * pairwise_dice_cost(src_pts, tgt_pts))
        return out

    @torch.no_grad()
    def assign(self, class_cost: torch.Tensor, mask_cost: torch.Tensor) -> MatchIndices:
        """Solve one image: class_cost (unweighted) and mask_cost (weighted) [Q, N] -> indices.

        Returns (proposal indices, target indices), sorted by proposal index.
        """
        device = mask_cost.device
        num_q, num_t = mask_cost.shape
        if class_cost.shape != (num_q, num_t):
            raise ValueError(
                f"class cost must be [Q={num_q}, N={num_t}], got {tuple(class_cost.shape)}"
            )
        if num_t > num_q:
            raise ValueError(f"cannot match {num_t} targets to only {num_q} proposals")
        if num_t == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty.clone()
        cost = (self.cost_class * class_cost.float() + mask_cost).cpu().numpy()
        if not np.isfinite(cost).all():
            raise FloatingPointError("matching cost contains NaN/inf (check the predictions)")
        rows, cols = linear_sum_assignment(cost)
        return (
            torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device),
        )

    @torch.no_grad()
    def match_default(
        self,
        pred_logits: torch.Tensor,
        pred_masks,
        targets: Sequence[dict],
        rand_fn: Optional[RandFn] = None,
    ) -> List[MatchIndices]:
        """Object proposals vs panoptic GT.

        Args:
            pred_logits: [B, Q, K+1] (background = last class).
            pred_masks: [B, Q, h, w] or mask logits, see :meth:`mask_costs`.
            targets: per image ``{"labels": [N] int64 in [0, K), "masks": [N, H, W]}``.
            rand_fn: source of the point draws, see :meth:`mask_costs`.
        """
        pred_masks = as_mask_logits(pred_masks)
        _check_batch(pred_masks, targets)
        tgt_masks = [_require(t, "masks", b) for b, t in enumerate(targets)]
        mask_costs = self.mask_costs(pred_masks, tgt_masks, rand_fn)
        out = []
        for b, tgt in enumerate(targets):
            labels = torch.as_tensor(_require(tgt, "labels", b), device=pred_logits.device).long()
            if len(labels) != tgt_masks[b].shape[0]:
                raise ValueError(
                    f"targets[{b}]: {len(labels)} labels but {tgt_masks[b].shape[0]} masks"
                )
            cost = default_class_cost(pred_logits[b].float(), labels)
            out.append(self.assign(cost, mask_costs[b]))
        return out

    @torch.no_grad()
    def match_by_logits(
        self,
        logits: Sequence[torch.Tensor],
        pred_masks,
        tgt_masks: Sequence[torch.Tensor],
        rand_fn: Optional[RandFn] = None,
    ) -> List[MatchIndices]:
        """Grounding / spatial / interleave: class cost = ``-softmax over proposals`` of the logits.

        Args:
            logits: per image [Q, N_b] task logits (column j = GT item j).
            pred_masks: [B, Q, h, w] or mask logits, see :meth:`mask_costs`.
            tgt_masks: per image [N_b, H, W].
            rand_fn: source of the point draws, see :meth:`mask_costs`.
        """
        pred_masks = as_mask_logits(pred_masks)
        batch, num_q = pred_masks.batch_size, pred_masks.num_rows
        if len(logits) != batch or len(tgt_masks) != batch:
            raise ValueError(
                f"need one logits/target entry per image: B={batch}, "
                f"got {len(logits)} logits and {len(tgt_masks)} target mask sets"
            )
        for b, (lg, tm) in enumerate(zip(logits, tgt_masks)):
            if lg.shape[1] > num_q or tm.shape[0] > num_q:
                raise ValueError(
                    f"image {b}: cannot match {tm.shape[0]} targets to only {num_q} proposals"
                )
        mask_costs = self.mask_costs(pred_masks, tgt_masks, rand_fn)
        return [
            self.assign(proposal_class_cost(lg.float()), mc) for lg, mc in zip(logits, mask_costs)
        ]


def _require(target: dict, key: str, index: int):
    if key not in target:
        raise KeyError(f"targets[{index}] has no key '{key}' (keys: {sorted(target)})")
    return target[key]


def _check_batch(pred_masks: MaskLogits, targets: Sequence[dict]) -> None:
    if len(targets) != pred_masks.batch_size:
        raise ValueError(f"got {len(targets)} targets for a batch of {pred_masks.batch_size}")
