"""Point-sampled mask losses and pairwise mask costs (Mask2Former style).

Coordinates are normalised to [0, 1] x [0, 1] as (x, y) and are sampled with ``grid_sample``
(``align_corners=False``), so a prediction at stride 4 and a target at full resolution are compared
at the same physical locations without any resizing.

Shapes used below:
    R: number of masks, P: number of points, h/w and H/W: prediction and target resolutions.

Re-implements (facts from the papers and code, no code copied):
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
- PointRend: Kirillov et al., "PointRend: Image Segmentation as Rendering", CVPR 2020
  (github.com/facebookresearch/detectron2, projects/PointRend).
"""

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

#: A source of uniform [0, 1) draws, called as ``rand_fn(shape, device=..., dtype=...)``
#: (the signature of :func:`torch.rand`). Every random number of the matchers and the point-sampled
#: losses comes from one; pass e.g. ``lambda shape, **kw: torch.rand(shape, generator=g, **kw)``
#: to seed them, or a function replaying recorded draws.
RandFn = Callable[..., torch.Tensor]

__all__ = [
    "RandFn",
    "point_sample",
    "point_sample_vectors",
    "grid_points",
    "uncertainty",
    "draw_point_candidates",
    "PointDraws",
    "pick_uncertain_points",
    "uncertain_point_coords",
    "sample_mask_points",
    "dice_loss",
    "sigmoid_bce_loss",
    "pairwise_dice_cost",
    "pairwise_bce_cost",
]


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read ``masks`` [R, C, H, W] bilinearly at ``coords`` [R, P, 2] -> [R, C, P]."""
    if masks.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(
            f"point_sample expects masks [R,C,H,W] and coords [R,P,2], got {tuple(masks.shape)} "
            f"and {tuple(coords.shape)}"
        )
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # [R, P, 1, 2] in grid_sample's [-1, 1] convention
    return F.grid_sample(masks, grid.to(masks.dtype), align_corners=False).squeeze(3)


def point_sample_vectors(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read one many-channel map ``maps`` [C, H, W] at ``coords`` [P, 2] -> [P, C]: the values of
    :func:`point_sample` (bilinear, ``align_corners=False``, zeros outside), but each point is a
    weighted sum of its 4 neighbouring channel vectors (one ``embedding_bag``), several times
    faster on CPU for hundreds of channels; ``maps`` in channels-last layout is read in place."""
    if maps.dim() != 3 or coords.dim() != 2 or coords.shape[-1] != 2:
        raise ValueError(
            f"point_sample_vectors expects maps [C,H,W] and coords [P,2], got "
            f"{tuple(maps.shape)} and {tuple(coords.shape)}"
        )
    channels, height, width = maps.shape
    table = maps.permute(1, 2, 0).reshape(height * width, channels)  # a view if channels-last
    # pixel coordinates of grid_sample with align_corners=False: centre of pixel i at i + 0.5
    x = coords[:, 0].to(torch.float32) * width - 0.5
    y = coords[:, 1].to(torch.float32) * height - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    index, weight = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            index.append((yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long())
            weight.append(wx * wy * inside)
    return F.embedding_bag(
        torch.stack(index, 1),
        table,
        per_sample_weights=torch.stack(weight, 1).to(table.dtype),
        mode="sum",
    )


def grid_points(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of every cell of a ``height`` x ``width`` grid as normalised (x, y): [h*w, 2].

    Used when ``num_points`` is ``None``: reading a mask at its own pixel centres returns it
    exactly.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of a class-agnostic logit map: ``-|logit|`` (largest at the boundary)."""
    return -logits.abs()


def draw_point_candidates(
    num_masks: int,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    rand_fn: Optional[RandFn] = None,
    device=None,
    dtype=torch.float32,
) -> "PointDraws":
    """The uniform draws of :func:`uncertain_point_coords` for ``num_masks`` masks, in the official
    order: the [R, num_points * oversample_ratio, 2] candidates, then the [R, num_points - kept, 2]
    fill-up points (None when every point is importance-sampled). They do not depend on the
    logits, so a caller may draw them now and read the logits later (the criterion makes the
    matched rows of every layer in one product, after all draws)."""
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            "oversample_ratio must be >= 1 and importance_sample_ratio in [0, 1], got "
            f"{oversample_ratio}, {importance_sample_ratio}"
        )
    rand_fn = torch.rand if rand_fn is None else rand_fn
    num_sampled = int(num_points * oversample_ratio)
    candidates = rand_fn((num_masks, num_sampled, 2), device=device, dtype=dtype)
    num_uncertain = int(importance_sample_ratio * num_points)
    fill = None
    if num_points > num_uncertain:
        fill = rand_fn((num_masks, num_points - num_uncertain, 2), device=device, dtype=dtype)
    return PointDraws(candidates, fill, num_uncertain)


class PointDraws(NamedTuple):
    """Uniform draws of the importance sampling (:func:`draw_point_candidates`)."""

    candidates: torch.Tensor  # [R, S, 2]
    fill: Optional[torch.Tensor]  # [R, F, 2] or None
    num_uncertain: int  # candidates kept per mask


def pick_uncertain_points(
    logits: torch.Tensor,
    draws: PointDraws,
    *,
    uncertainty_fn: Callable[[torch.Tensor], torch.Tensor] = uncertainty,
) -> torch.Tensor:
    """Keep the ``draws.num_uncertain`` most uncertain candidates of ``logits`` [R, 1, h, w] and
    append the fill-up points: [R, num_points, 2]."""
    point_unc = uncertainty_fn(point_sample(logits, draws.candidates))[:, 0]  # [R, S]
    idx = torch.topk(point_unc, k=draws.num_uncertain, dim=1).indices  # [R, num_uncertain]
    picked = torch.gather(draws.candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    return picked if draws.fill is None else torch.cat([picked, draws.fill], dim=1)


def uncertain_point_coords(
    logits: torch.Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty_fn: Callable[[torch.Tensor], torch.Tensor] = uncertainty,
    rand_fn: Optional[RandFn] = None,
) -> torch.Tensor:
    """Importance sampling of PointRend / Mask2Former.

    Draw ``num_points * oversample_ratio`` uniform points, keep the
    ``importance_sample_ratio * num_points`` most uncertain ones, and fill up with fresh uniform
    points.

    Args:
        logits: [R, 1, h, w] mask logits.
        rand_fn: source of the uniform draws (default :func:`torch.rand`); called twice, for the
            [R, num_points * oversample_ratio, 2] candidates then the [R, num_points - kept, 2]
            fill-up points (the official order; :func:`draw_point_candidates`).
    Returns:
        [R, num_points, 2] normalised (x, y) coordinates.
    """
    draws = draw_point_candidates(
        logits.shape[0],
        num_points=num_points,
        oversample_ratio=oversample_ratio,
        importance_sample_ratio=importance_sample_ratio,
        rand_fn=rand_fn,
        device=logits.device,
        dtype=logits.dtype,
    )
    return pick_uncertain_points(logits, draws, uncertainty_fn=uncertainty_fn)


def sample_mask_points(
    pred_masks: torch.Tensor,
    tgt_masks: torch.Tensor,
    *,
    num_points: Optional[int],
    oversample_ratio: float,
    importance_sample_ratio: float,
    rand_fn: Optional[RandFn] = None,
    draws: Optional["PointDraws"] = None,
):
    """Read matched predictions and targets at the same points for the mask losses.

    Args:
        pred_masks: [R, h, w] logits (gradient flows through the returned point logits).
        tgt_masks: [R, H, W] binary targets (any dtype).
        num_points: number of importance-sampled points; ``None`` = every pixel centre of the
            prediction grid (deterministic, used by small tests).
        rand_fn: source of the uniform draws, see :func:`uncertain_point_coords`.
        draws: the points drawn earlier by :func:`draw_point_candidates` (then ``rand_fn`` is
            not called).
    Returns:
        (point_logits [R, P], point_labels [R, P]).
    """
    src = pred_masks.unsqueeze(1)
    tgt = tgt_masks.unsqueeze(1).to(src.dtype)
    with torch.no_grad():
        if num_points is None:
            coords = grid_points(src.shape[-2], src.shape[-1], device=src.device, dtype=src.dtype)
            coords = coords.unsqueeze(0).expand(src.shape[0], -1, -1)
        elif draws is not None:
            coords = pick_uncertain_points(src.detach(), draws)
        else:
            coords = uncertain_point_coords(
                src.detach(),
                num_points=num_points,
                oversample_ratio=oversample_ratio,
                importance_sample_ratio=importance_sample_ratio,
                rand_fn=rand_fn,
            )
        labels = point_sample(tgt, coords)[:, 0]
    logits = point_sample(src, coords)[:, 0]
    return logits, labels


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of ``1 - (2*sum(p*t) + 1) / (sum(p) + sum(t) + 1)``, divided by ``num_masks``.

    Args:
        logits: [R, P]; targets: [R, P] in {0, 1}; p = sigmoid(logits).
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy averaged over points, summed over masks, divided by ``num_masks``.

    Args:
        logits: [R, P]; targets: [R, P] in {0, 1}.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every (prediction, target) pair: [..., N, P], [M, P] -> [..., N, M]."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1, keepdim=True) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean-over-points BCE of every (prediction, target) pair: [..., N, P], [M, P] -> [..., N, M].

    Uses ``BCE(x, t) = softplus(x) - x * t`` so that all pairs cost a single matmul.
    """
    num_points = logits.shape[-1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.t()) / num_points
