"""Inference-time post-processing as pure functions (spec §1.6, Mask2Former rules).

Conventions: one image at a time. ``mask_cls`` [Q, K+1] are class logits with the background
(no-object) class last; ``mask_pred`` [Q, H, W] are mask logits (already resized to the output size
with :func:`resize_mask_logits` when the result is meant for evaluation). Category ids are
contiguous in [0, K) (detectron2 convention).

Re-implements (facts from the papers and code, no code copied):
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .similarity import grounding_logits, interleave_logits, spatial_logits

__all__ = [
    "RESIZE_RULES",
    "ResizeRule",
    "resize_mask_logits",
    "semantic_inference",
    "panoptic_inference",
    "instance_inference",
    "mask_boxes",
    "grounding_pick",
    "interactive_pick",
    "interleave_pick",
]


class ResizeRule(NamedTuple):
    """How one task's stride-4 mask logits reach the output size (two ``F.interpolate`` calls).

    Attributes:
        to_padded: ``(mode, antialias)`` of the resize to the padded input size; None = no such
            step (the crop then applies to the stride-4 map itself, as the official interleave
            evaluation does).
        to_output: ``(mode, antialias)`` of the resize of the cropped map to the output size.
    """

    to_padded: Optional[Tuple[str, bool]]
    to_output: Tuple[str, bool]


# The official evaluate_* functions (find_model.py) per task. ``sem_seg_postprocess`` (crop, then
# bicubic with antialias=True to the output size) ends the generic, grounding and interleave paths.
# Antialiased bicubic is not plain bicubic even when upsampling: torch's antialiased kernel uses the
# cubic coefficient a = -0.5 (PIL), the plain one a = -0.75.
RESIZE_RULES: Dict[str, ResizeRule] = {
    "generic": ResizeRule(("bilinear", False), ("bicubic", True)),
    "grounding": ResizeRule(("bilinear", False), ("bicubic", True)),
    "interleave": ResizeRule(("bicubic", True), ("bicubic", True)),
    "interactive": ResizeRule(("bicubic", False), ("bicubic", False)),
    # The official interleave evaluation as it runs: sem_seg_postprocess on the stride-4 logits,
    # so its crop removes nothing and the padded border is stretched into the image (a defect
    # kept only to reproduce the official numbers; "interleave" is the aligned version).
    "interleave_official": ResizeRule(None, ("bicubic", True)),
}


def resize_mask_logits(
    mask_logits: torch.Tensor,
    *,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    task: str = "generic",
    mode: Optional[str] = None,
) -> torch.Tensor:
    """Stride-4 logits [N, h, w] -> [N, out_h, out_w] as the official evaluation of ``task`` does.

    Upsample to the padded input size, crop the valid ``image_size`` (the resized image before
    padding), then resize to ``output_size`` (original image). ``align_corners=False`` throughout.
    Per task (:data:`RESIZE_RULES`, official ``find_model.py``):

    * ``"generic"`` (``evaluate``: semantic / instance / panoptic) and ``"grounding"``
      (``evaluate_grounding``): bilinear to the padded size; ``sem_seg_postprocess`` then crops and
      resizes with bicubic, ``antialias=True``.
    * ``"interleave"`` (``evaluate_interleave_grounding``): bicubic with ``antialias=True`` for both
      steps. The official code calls ``sem_seg_postprocess`` on the stride-4 logits directly, i.e.
      one antialiased-bicubic resize from stride 4 to the output size, and its crop (image size
      applied to the stride-4 map) removes nothing. Ours crops the padding away; both agree when the
      image needs no padding and the output size is the image size (see docs/parity.md).
    * ``"interactive"`` (``evaluate_interactive``): plain bicubic (no antialiasing) for both
      steps; the mask is then thresholded at ``sigmoid > 0.5``.
    * ``"interleave_official"``: the official interleave path exactly (no resize to the padded
      size; the crop of the stride-4 map is a no-op; one antialiased bicubic resize to the output
      size), for reproducing the official numbers.

    ``mode`` (optional) overrides the rule: that mode for both steps, no antialiasing.
    """
    if mask_logits.dim() != 3:
        raise ValueError(f"mask_logits must be [N, h, w], got {tuple(mask_logits.shape)}")
    if image_size[0] > padded_size[0] or image_size[1] > padded_size[1]:
        raise ValueError(f"image_size {image_size} exceeds padded_size {padded_size}")
    if mode is not None:
        rule = ResizeRule((mode, False), (mode, False))
    elif task in RESIZE_RULES:
        rule = RESIZE_RULES[task]
    else:
        raise ValueError(f"task must be one of {sorted(RESIZE_RULES)}, got {task!r}")
    x = mask_logits.unsqueeze(0)
    if rule.to_padded is not None:
        x = _interpolate(x, padded_size, *rule.to_padded)
    x = x[:, :, : image_size[0], : image_size[1]]
    x = _interpolate(x, output_size, *rule.to_output)
    return x[0]


def _interpolate(x: torch.Tensor, size, mode: str, antialias: bool) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        # align_corners=False at scale 1 samples every pixel at its own centre, where the
        # bilinear and bicubic kernels weigh it 1 and its neighbours 0: the identity, skipped
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


def _check_pair(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> None:
    if mask_cls.dim() != 2 or mask_pred.dim() != 3 or mask_cls.shape[0] != mask_pred.shape[0]:
        raise ValueError(
            f"expected mask_cls [Q, K+1] and mask_pred [Q, H, W], got {tuple(mask_cls.shape)} and "
            f"{tuple(mask_pred.shape)}"
        )


def _sigmoid(mask_pred: torch.Tensor, mask_prob: Optional[torch.Tensor]) -> torch.Tensor:
    """sigmoid(mask_pred), or ``mask_prob`` when the caller computed it once for several steps."""
    if mask_prob is None:
        return mask_pred.sigmoid()
    if mask_prob.shape != mask_pred.shape:
        raise ValueError(
            f"mask_prob {tuple(mask_prob.shape)} must be sigmoid(mask_pred), of its shape "
            f"{tuple(mask_pred.shape)}"
        )
    return mask_prob


def semantic_inference(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, *, mask_prob: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-class score maps [K, H, W] = sum_q softmax(cls)[q, :K] * sigmoid(mask)[q].
    ``mask_prob``: sigmoid(mask_pred) if already computed (semantic, panoptic and instance
    inference of one image share it)."""
    _check_pair(mask_cls, mask_pred)
    probs = mask_cls.softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probs, _sigmoid(mask_pred, mask_prob))


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    is_thing: Sequence[bool],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    mask_prob: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Panoptic segmentation.

    A query is kept if its top class is not background and its probability is above
    ``object_mask_threshold``. Each pixel goes to the kept query with the largest
    ``prob * sigmoid(mask)``. A segment is dropped if its visible area / its own (sigmoid >= 0.5)
    area < ``overlap_threshold``. Stuff segments of the same class are merged into one id.

    Args:
        is_thing: K booleans, True = thing class.
        mask_prob: sigmoid(mask_pred) if already computed.
    Returns:
        (panoptic_seg [H, W] int32 with 0 = void and segment ids 1..S, segments_info list of
        ``{"id", "isthing", "category_id"}``).
    """
    _check_pair(mask_cls, mask_pred)
    num_classes = mask_cls.shape[1] - 1
    if len(is_thing) != num_classes:
        raise ValueError(f"is_thing must have K={num_classes} entries, got {len(is_thing)}")
    scores, labels = mask_cls.softmax(-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    # the probabilities of the kept queries only
    if mask_prob is None:
        cur_masks = mask_pred[keep].sigmoid()
    else:  # rows of the shared probabilities, read in place
        prob = _sigmoid(mask_pred, mask_prob)
        cur_masks = [prob[q] for q in keep.nonzero()[:, 0].tolist()]
    height, width = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_pred.device)
    segments_info: List[Dict] = []
    if len(cur_masks) == 0:
        return panoptic_seg, segments_info
    owner = _weighted_argmax(cur_scores, cur_masks)
    stuff_ids: Dict[int, int] = {}
    next_id = 0
    for k in range(cur_classes.shape[0]):
        category = int(cur_classes[k].item())
        thing = bool(is_thing[category])
        visible = owner == k
        own = cur_masks[k] >= 0.5
        mask = visible & own
        visible_area, own_area = int(visible.sum()), int(own.sum())
        if visible_area == 0 or own_area == 0 or int(mask.sum()) == 0:
            continue
        if visible_area / own_area < overlap_threshold:
            continue
        if not thing:
            if category in stuff_ids:
                panoptic_seg[mask] = stuff_ids[category]
                continue
            stuff_ids[category] = next_id + 1
        next_id += 1
        panoptic_seg[mask] = next_id
        segments_info.append({"id": next_id, "isthing": thing, "category_id": category})
    return panoptic_seg, segments_info


def _count_true(masks: torch.Tensor) -> torch.Tensor:
    """[n, P] bool -> [n] int32 counts of True (exact below 2**31). Summed as bytes (a bool sum
    widens every pixel to int64), by runs of 128 into int16 first when P allows: the narrow
    partial sums are twice as fast on CPU as int32 sums over the whole row."""
    as_bytes = masks.view(torch.uint8)
    n, p = as_bytes.shape
    if p % 128:
        return as_bytes.sum(1, dtype=torch.int32)
    return as_bytes.view(n, p // 128, 128).sum(2, dtype=torch.int16).sum(1, dtype=torch.int32)


def _weighted_argmax(scores: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(scores[:, None, None] * stack(maps)).argmax(0)`` for n maps [H, W]: [H, W] long, the
    first maximal index on ties, as ``argmax``. One map at a time with a running maximum: the
    products are the same, and on CPU ``argmax`` over the first of three dims is 2-6x slower
    than these n passes over [H, W] (and needs the [n, H, W] product at once)."""
    # the products in the promoted dtype of the [n] scores and the maps, as the stacked product
    dtype = torch.promote_types(scores.dtype, maps[0].dtype)
    best = maps[0].to(dtype) * scores[0]
    owner = torch.zeros(best.shape, dtype=torch.long, device=best.device)
    for k in range(1, len(maps)):
        candidate = maps[k].to(dtype) * scores[k]
        owner.masked_fill_(candidate > best, k)  # strictly larger: the first index keeps ties
        torch.maximum(best, candidate, out=best)
    return owner


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    top_k: int = 100,
    is_thing: Optional[Sequence[bool]] = None,
    panoptic_on: bool = False,
    mask_prob: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """Instance segmentation: top-k (query, class) pairs over the Q x K class probabilities.

    Score = class prob x mean of sigmoid(mask) inside the binary mask (logit > 0). With
    ``panoptic_on``, pairs with a stuff class are removed (``is_thing`` required).
    ``mask_prob``: sigmoid(mask_pred) if already computed.

    Returns:
        dict with ``pred_masks`` [k, H, W] bool, ``pred_boxes`` [k, 4] float (:func:`mask_boxes`),
        ``scores`` [k], ``pred_classes`` [k] int64 and ``query_indices`` [k] int64, ordered by
        decreasing class probability (not the final score).
    """
    _check_pair(mask_cls, mask_pred)
    num_q, num_classes = mask_cls.shape[0], mask_cls.shape[1] - 1
    probs = mask_cls.softmax(-1)[:, :-1]
    k = min(int(top_k), num_q * num_classes)
    cls_scores, flat_idx = probs.flatten().topk(k, sorted=True)
    classes = flat_idx % num_classes
    queries = torch.div(flat_idx, num_classes, rounding_mode="floor")
    if panoptic_on:
        if is_thing is None or len(is_thing) != num_classes:
            raise ValueError(f"panoptic_on needs is_thing with K={num_classes} entries")
        thing = torch.as_tensor(list(is_thing), dtype=torch.bool, device=classes.device)
        keep = thing[classes]
        cls_scores, classes, queries = cls_scores[keep], classes[keep], queries[keep]
    # A query can head several pairs (one per class): its mask, score and box are computed
    # once, on the distinct queries, then handed to each of its pairs.
    distinct, pair_of = torch.unique(queries, return_inverse=True)
    logits = mask_pred[distinct]
    binary = logits > 0
    # sigmoid in place of the gathered copy (or the shared probabilities' rows)
    prob = logits.sigmoid_() if mask_prob is None else _sigmoid(mask_pred, mask_prob)[distinct]
    area = _count_true(binary.flatten(1)).to(prob.dtype)
    mask_scores = prob.mul_(binary).flatten(1).sum(1) / (area + 1e-6)
    return {
        "pred_masks": binary[pair_of],
        "pred_boxes": mask_boxes(binary)[pair_of],
        "scores": cls_scores * mask_scores[pair_of],
        "pred_classes": classes,
        "query_indices": queries,
    }


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[n, H, W] bool -> [n, 4] float32 boxes (x1, y1, x2, y2) with exclusive right / bottom
    edges, as detectron2's ``BitMasks.get_bounding_boxes``; zeros for an empty mask."""
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be [n, H, W] bool, got {tuple(masks.shape)} {masks.dtype}")
    n, h, w = masks.shape
    # any() as the max of the bytes (0 / 1): the uint8 max reduction is vectorised, the bool
    # any() is not (35 MB of masks: ~1 ms against ~45 ms on CPU)
    as_bytes = masks.view(torch.uint8)
    rows = as_bytes.amax(dim=2).view(torch.bool)  # [n, H]
    cols = as_bytes.amax(dim=1).view(torch.bool)  # [n, W]
    # argmax returns the first maximal index: first True from the start and from the end
    y0 = rows.to(torch.uint8).argmax(1)
    x0 = cols.to(torch.uint8).argmax(1)
    y1 = h - rows.flip(1).to(torch.uint8).argmax(1)
    x1 = w - cols.flip(1).to(torch.uint8).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).to(torch.float32)
    return boxes * (rows.any(1) & cols.any(1))[:, None].to(torch.float32)


def grounding_pick(
    pred_gtexts: torch.Tensor, grounding_query: torch.Tensor, logit_scale: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best grounding proposal per phrase.

    Args:
        pred_gtexts: [Q, D]; grounding_query: [G, D]; logit_scale: log-space scalar.
    Returns:
        (indices [G] int64, logits [Q, G]).
    """
    logits = grounding_logits(pred_gtexts, grounding_query, logit_scale)
    return logits.argmax(0), logits


def interactive_pick(
    smaskembs: torch.Tensor, pspatials: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best segment proposal per prompt: argmax over Q of smaskembs [Q, D] . pspatials [P, D].

    Returns (indices [P] int64, logits [Q, P]).
    """
    logits = spatial_logits(smaskembs, pspatials)
    return logits.argmax(0), logits


def interleave_pick(
    imaskembs: torch.Tensor,
    entity_pixel: torch.Tensor,
    interleave_objects: torch.Tensor,
    entity_class: torch.Tensor,
    is_visual: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best entity proposal per entity with the mixed pixel/semantic logit.

    Returns (indices [E] int64, logits [Q, E]); see :func:`similarity.interleave_logits`.
    """
    logits = interleave_logits(imaskembs, entity_pixel, interleave_objects, entity_class, is_visual)
    return logits.argmax(0), logits
