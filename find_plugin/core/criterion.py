"""FIND training criterion: matching + all losses of spec §3.2 with deep supervision.

Inputs
------
``outputs``: dict of the interface's named outputs (spec §1.5), each [B, n, ...], plus optionally
``aux_outputs`` = list of dicts with the same keys, one per earlier prediction (first = initial
queries, last = the layer before the final one). Other keys (``item_padding``, ``class_bank``) are
ignored. A mask output (``pred_masks``, ``pred_gmasks``, ``pred_smasks``, ``pred_imasks``) is
a [B, n, h, w] logit tensor, or factored (:class:`~find_plugin.core.mask_logits.FactoredMasks`,
or the interface's :class:`~find_plugin.core.mask_logits.LayerOutputs`, whose mask outputs are
read factored): the matchers then read the mask features at their points and the losses make the
matched rows only, the same values up to float rounding.

Per-item rows: the per-image item sets (description queries, spatial queries, entity queries) are
padded to the batch maximum along axis 1. ``outputs["item_padding"][variable]`` [B, n] (True =
padded row, as returned by :class:`~find_plugin.core.interface.FINDInterface`) says which rows are
real; the real rows of image b, in order, are its items 0..n_b-1 and must be exactly as many as its
target masks (``len(targets[b]["grounding_masks"])`` etc.), otherwise the criterion raises. Padded
rows are never read, wherever they sit (``query_index`` decides that, not the criterion). The
variables are ``queries_language_description`` (grounding), ``queries_vision_spatial`` (spatial)
and ``queries_interleave_entity`` (interleave); see :data:`ITEM_VARIABLES`.

``targets``: list (one per image) of dicts; the keys each loss group needs:

* labels / masks: ``labels`` [N] int64 in [0, K); ``masks`` [N, H, W] binary (any resolution);
* groundings: ``grounding_masks`` [G, H, W]; optional ``grounding_hash`` [G] int (equal values =
  same phrase text, default all distinct); optional ``grounding_task`` "text" | "class"
  (default "text");
* spatials: ``spatial_masks`` [P, H, W], GT mask of each prompt (all-zero masks are skipped);
* interleaves: ``interleave_masks`` [E, H, W]; ``interleave_is_visual`` [E] bool;
* retrievals: ``caption_tokens`` [T, D] projected caption tokens; ``caption_valid`` [T] bool
  (True = real token).

``logit_scale``: scalar log-space temperature (passed explicitly).

``rand_fn`` (optional): the source of every uniform draw of the matchers and the point-sampled mask
losses (default :func:`torch.rand`, see :data:`~find_plugin.core.point_losses.RandFn`). The draws
happen in the official order: layers final first then ``aux_outputs`` from the last to the first;
per layer the default matcher (one [1, P, 2] draw per image), the mask losses (candidates then
fill-up points), then spatial, grounding and interleave (matcher per image, then their losses).

Output: dict of **already weighted** scalar losses (detectron2 convention: sum them for the total).
Keys follow Mask2Former: ``loss_<name>`` for the final prediction and ``loss_<name>_<i>`` for
``aux_outputs[i]``, i.e. ``_0`` is the prediction on the initial queries and ``_{n-1}`` the layer
before the final one (``<name>`` one of :data:`DEFAULT_WEIGHTS`). The dict is ordered like the
official one (final layer first, then the aux layers from the last to the first; within a layer
labels, masks, spatials, groundings, retrievals, interleaves), so a Python ``sum`` over it adds in
the official order.

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
"""

from functools import partial
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .mask_logits import MaskLogits, RowBatch, as_mask_logits
from .mask_terms import MaskTerms, resolve
from .matcher import HungarianMatcher, MatchIndices
from .point_losses import RandFn
from .retrieval import fine_grained_loss, itc_loss
from .similarity import grounding_logits, interleave_logits, spatial_logits

__all__ = ["FINDCriterion", "DEFAULT_WEIGHTS", "LOSS_GROUPS", "ITEM_VARIABLES"]

# focalt config values (spec §3.2).
DEFAULT_WEIGHTS: Dict[str, float] = {
    "mask_ce": 2.0,
    "mask_bce": 5.0,
    "mask_dice": 5.0,
    "grounding_ce": 0.4,
    "grounding_bce": 1.0,
    "grounding_dice": 1.0,
    "spatial_ce": 0.4,
    "spatial_bce": 1.0,
    "spatial_dice": 1.0,
    "interleave_ce": 0.4,
    "interleave_bce": 1.0,
    "interleave_dice": 1.0,
    "interleave_itc": 8.0,
    "retrieval_decoder": 8.0,
}

LOSS_GROUPS: Dict[str, tuple] = {
    "labels": ("mask_ce",),
    "masks": ("mask_bce", "mask_dice"),
    "groundings": ("grounding_ce", "grounding_bce", "grounding_dice"),
    "spatials": ("spatial_ce", "spatial_bce", "spatial_dice"),
    "interleaves": ("interleave_ce", "interleave_bce", "interleave_dice", "interleave_itc"),
    "retrievals": ("retrieval_decoder",),
}


#: Interface variable whose ``item_padding`` aligns the query rows of each per-item loss group.
ITEM_VARIABLES: Dict[str, str] = {
    "groundings": "queries_language_description",
    "spatials": "queries_vision_spatial",
    "interleaves": "queries_interleave_entity",
}


class FINDCriterion(nn.Module):
    """Matching and losses of every FIND task.

    Args:
        num_classes: K (number of real classes); ``pred_logits`` has K+1 columns, background last.
        losses: loss groups to compute, keys of :data:`LOSS_GROUPS`.
        weights: overrides of :data:`DEFAULT_WEIGHTS` (unknown names, or names of disabled groups,
            raise).
        matcher / grounding_matcher / spatial_matcher / interleave_matcher: per-task matchers
            (default class/mask/dice costs 2/5/5 with ``num_points`` points).
        no_object_weight: CE weight of the background class (0.1).
        num_points, oversample_ratio, importance_sample_ratio: point-sampled mask losses;
            ``num_points=None`` = every pixel of the prediction grid.
        grounding_task_weights: multiplier of ``grounding_ce`` per grounding mode.
        fine_grained_weight: weight of the proposal-token term inside ``retrieval_decoder`` (0.5).
        deep_supervision: also compute every loss on ``aux_outputs``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        losses: Sequence[str] = tuple(LOSS_GROUPS),
        weights: Optional[Mapping[str, float]] = None,
        matcher: Optional[HungarianMatcher] = None,
        grounding_matcher: Optional[HungarianMatcher] = None,
        spatial_matcher: Optional[HungarianMatcher] = None,
        interleave_matcher: Optional[HungarianMatcher] = None,
        no_object_weight: float = 0.1,
        num_points: Optional[int] = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        grounding_task_weights: Optional[Mapping[str, float]] = None,
        fine_grained_weight: float = 0.5,
        deep_supervision: bool = True,
    ):
        super().__init__()
        unknown = [g for g in losses if g not in LOSS_GROUPS]
        if unknown:
            raise ValueError(
                f"unknown loss group(s) {unknown}; expected some of {list(LOSS_GROUPS)}"
            )
        self.losses = tuple(losses)
        active = {name for g in self.losses for name in LOSS_GROUPS[g]}
        weights = dict(weights or {})
        bad = [k for k in weights if k not in DEFAULT_WEIGHTS]
        if bad:
            raise ValueError(
                f"unknown loss weight(s) {bad}; expected some of {list(DEFAULT_WEIGHTS)}"
            )
        unused = [k for k in weights if k not in active]
        if unused:
            raise ValueError(f"weight(s) {unused} given but their loss group is not in losses")
        self.weights = {k: float(weights.get(k, DEFAULT_WEIGHTS[k])) for k in sorted(active)}
        self.num_classes = int(num_classes)
        self.num_points = num_points
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.grounding_task_weights = dict(grounding_task_weights or {"text": 2.0, "class": 0.5})
        self.fine_grained_weight = float(fine_grained_weight)
        self.deep_supervision = bool(deep_supervision)

        def _default_matcher(m):
            return m if m is not None else HungarianMatcher(num_points=num_points)

        self.matcher = _default_matcher(matcher)
        self.grounding_matcher = _default_matcher(grounding_matcher)
        self.spatial_matcher = _default_matcher(spatial_matcher)
        self.interleave_matcher = _default_matcher(interleave_matcher)
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = no_object_weight
        # derived from the config, not learnt: not part of checkpoints
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    # ------------------------------------------------------------------ top level
    def forward(
        self,
        outputs: Mapping[str, object],
        targets: Sequence[dict],
        *,
        logit_scale: torch.Tensor,
        rand_fn: Optional[RandFn] = None,
    ) -> Dict[str, torch.Tensor]:
        if not isinstance(targets, (list, tuple)):
            raise TypeError(f"targets must be a list of per-image dicts, got {type(targets)}")
        num_masks = None
        if "masks" in self.losses or "labels" in self.losses:
            count = sum(len(_get(t, "labels", i)) for i, t in enumerate(targets))
            num_masks = _average_count(count, _get(outputs, "pred_logits").device)
        rows = self._item_rows(outputs, targets)
        layers = [("", outputs)]  # layer_losses reads its keys only (not aux_outputs)
        if self.deep_supervision:
            aux = list(outputs.get("aux_outputs", []))
            # official order: the deepest aux layer first (draw order and dict order)
            layers += [(f"_{i}", out) for i, out in reversed(list(enumerate(aux)))]
        # the matched rows of every layer are made after all layers, in one product per image
        # (RowBatch); their mask terms wait for them (mask_terms.Pending), their draws do not
        batch = RowBatch()
        result = {}
        for suffix, out in layers:
            for name, value in self.layer_losses(
                out, targets, logit_scale, num_masks, rows, rand_fn, batch
            ).items():
                result[f"loss_{name}{suffix}"] = (name, value)
        return {key: resolve(value) * self.weights[name] for key, (name, value) in result.items()}

    def _item_rows(self, outputs, targets) -> Dict[str, List[torch.Tensor]]:
        """Per active per-item group: for each image, the indices of its real query rows."""
        rows: Dict[str, List[torch.Tensor]] = {}
        mask_key = {"groundings": "grounding_masks", "spatials": "spatial_masks"}
        mask_key["interleaves"] = "interleave_masks"
        for group, var in ITEM_VARIABLES.items():
            if group not in self.losses:
                continue
            padding = outputs.get("item_padding", {}).get(var)
            if padding is None:
                raise KeyError(
                    f"outputs['item_padding'][{var!r}] is needed for the {group!r} losses "
                    "(FINDInterface returns it; it says which query rows are real)"
                )
            per_image = []
            for b, t in enumerate(targets):
                real = torch.nonzero(~padding[b].bool()).flatten()
                n = len(_get(t, mask_key[group], b))
                if len(real) != n:
                    raise ValueError(
                        f"targets[{b}]['{mask_key[group]}'] has {n} masks but "
                        f"item_padding[{var!r}][{b}] has {len(real)} real rows; the interface "
                        "must get one query per target mask"
                    )
                per_image.append(real)
            rows[group] = per_image
        return rows

    def layer_losses(
        self, outputs, targets, logit_scale, num_masks, rows, rand_fn=None, batch=None
    ) -> Dict[str, torch.Tensor]:
        """Unweighted losses of one prediction layer; ``rows`` from :meth:`_item_rows`.

        Groups run in the official order (it fixes the order of the random draws). With a
        :class:`~find_plugin.core.mask_logits.RowBatch` ``batch``, the point-sampled mask terms of
        factored masks are pending (:func:`~find_plugin.core.mask_terms.resolve` gives their
        values); without one, every value is a tensor.
        """
        out = {}
        if "labels" in self.losses or "masks" in self.losses:
            indices = self.matcher.match_default(
                _get(outputs, "pred_logits").detach(),
                _masks(outputs, "pred_masks").detach(),
                targets,
                rand_fn,
            )
            if "labels" in self.losses:
                out["mask_ce"] = self.loss_labels(outputs, targets, indices)
            if "masks" in self.losses:
                out.update(self.loss_masks(outputs, targets, indices, num_masks, rand_fn, batch))
        if "spatials" in self.losses:
            out.update(self.loss_spatials(outputs, targets, rows["spatials"], rand_fn, batch))
        if "groundings" in self.losses:
            out.update(
                self.loss_groundings(
                    outputs, targets, logit_scale, rows["groundings"], rand_fn, batch
                )
            )
        if "retrievals" in self.losses:
            out["retrieval_decoder"] = self.loss_retrievals(outputs, targets, logit_scale)
        if "interleaves" in self.losses:
            out.update(
                self.loss_interleaves(
                    outputs, targets, logit_scale, rows["interleaves"], rand_fn, batch
                )
            )
        return out

    # ------------------------------------------------------------------ generic segmentation
    def loss_labels(self, outputs, targets, indices: List[MatchIndices]) -> torch.Tensor:
        """CE over K+1 classes; unmatched proposals -> background (weight ``no_object_weight``)."""
        logits = _get(outputs, "pred_logits").float()
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"pred_logits must have K+1={self.num_classes + 1} classes, got {logits.shape[-1]}"
            )
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src] = targets[b]["labels"].to(logits.device).long()[tgt]
        weight = self.empty_weight.to(logits)
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)

    def loss_masks(
        self, outputs, targets, indices, num_masks, rand_fn=None, batch=None
    ) -> Dict[str, torch.Tensor]:
        pred = _masks(outputs, "pred_masks")
        picks = [(b, src) for b, (src, _) in enumerate(indices)]
        masks = [_get(t, "masks", b) for b, t in enumerate(targets)]
        tgt = partial(_gather_tgt, masks, indices, pred)
        return self._mask_terms("mask", pred, picks, tgt, num_masks, rand_fn, batch)

    # ------------------------------------------------------------------ grounding
    def loss_groundings(
        self, outputs, targets, logit_scale, rows, rand_fn=None, batch=None
    ) -> Dict[str, torch.Tensor]:
        gmasks = _masks(outputs, "pred_gmasks")
        gtexts = _get(outputs, "pred_gtexts")
        gquery = _get(outputs, "pred_grounding_query")
        tmasks = [_get(t, "grounding_masks", b) for b, t in enumerate(targets)]
        if sum(len(m) for m in tmasks) == 0:
            # nothing to ground in the batch: no matching (and no draws)
            zero = _zero(gmasks.anchor(), gtexts, gquery)
            return {"grounding_bce": zero, "grounding_dice": zero, "grounding_ce": zero}
        logits = [
            grounding_logits(gtexts[b], gquery[b, rows[b]], logit_scale) for b in range(len(tmasks))
        ]
        indices = self.grounding_matcher.match_by_logits(
            [lg.detach() for lg in logits], gmasks.detach(), tmasks, rand_fn
        )
        picks = [(b, src) for b, (src, _) in enumerate(indices)]
        tgt = partial(_gather_tgt, tmasks, indices, gmasks)
        num = max(sum(len(src) for src, _ in indices), 1)
        out = self._mask_terms("grounding", gmasks, picks, tgt, num, rand_fn, batch)
        ce_terms = []
        for b, (lg, (si, ti)) in enumerate(zip(logits, indices)):
            if lg.shape[1] == 0:
                continue
            task = targets[b].get("grounding_task", "text")
            if task not in self.grounding_task_weights:
                raise ValueError(
                    f"targets[{b}]['grounding_task']={task!r}; expected one of "
                    f"{list(self.grounding_task_weights)}"
                )
            num_g = lg.shape[1]
            hashes = targets[b].get("grounding_hash")
            hashes = torch.arange(num_g) if hashes is None else torch.as_tensor(hashes).reshape(-1)
            if hashes.numel() != num_g:
                raise ValueError(f"targets[{b}]['grounding_hash'] must have {num_g} entries")
            onehot = torch.zeros_like(lg)
            onehot[si, ti] = 1.0
            # phrases with the same text share their targets: average the one-hots of the group
            same = (hashes[:, None] == hashes[None, :]).to(lg)
            share = same / same.sum(-1, keepdim=True)
            soft = onehot @ share  # [Q, G]
            ce = torch.sum(-soft.t() * F.log_softmax(lg.t().float(), dim=-1), dim=-1).mean()
            ce_terms.append(self.grounding_task_weights[task] * ce)
        out["grounding_ce"] = torch.stack(ce_terms).mean() if ce_terms else _zero(gtexts, gquery)
        return out

    # ------------------------------------------------------------------ interactive
    def loss_spatials(
        self, outputs, targets, rows, rand_fn=None, batch=None
    ) -> Dict[str, torch.Tensor]:
        smasks = _masks(outputs, "pred_smasks")
        embs = _get(outputs, "pred_smaskembs")
        queries = _get(outputs, "pred_pspatials")
        tmasks = [_get(t, "spatial_masks", b) for b, t in enumerate(targets)]
        logits = [spatial_logits(embs[b], queries[b, rows[b]]) for b in range(len(tmasks))]
        return self._prompted_terms(
            "spatial",
            self.spatial_matcher,
            smasks,
            logits,
            tmasks,
            zero_of=(embs, queries),
            rand_fn=rand_fn,
            batch=batch,
        )

    # ------------------------------------------------------------------ interleave
    def loss_interleaves(
        self, outputs, targets, logit_scale, rows, rand_fn=None, batch=None
    ) -> Dict[str, torch.Tensor]:
        imasks = _masks(outputs, "pred_imasks")
        im_emb, ent_pix = _get(outputs, "pred_imaskembs"), _get(outputs, "pred_entity_pixel")
        ic_emb, ent_cls = _get(outputs, "pred_interleave_objects"), _get(
            outputs, "pred_entity_class"
        )
        tmasks = [_get(t, "interleave_masks", b) for b, t in enumerate(targets)]
        logits = []
        for b, r in enumerate(rows):
            vis = torch.as_tensor(_get(targets[b], "interleave_is_visual", b), device=im_emb.device)
            logits.append(
                interleave_logits(im_emb[b], ent_pix[b, r], ic_emb[b], ent_cls[b, r], vis)
            )
        out = self._prompted_terms(
            "interleave",
            self.interleave_matcher,
            imasks,
            logits,
            tmasks,
            zero_of=(ent_pix, ent_cls),
            rand_fn=rand_fn,
            batch=batch,
        )
        # Unlike the official code (which returns 0 for everything when no entity mask is
        # positive), the image<->sentence contrastive term does not depend on masks and is kept.
        out["interleave_itc"] = itc_loss(
            _get(outputs, "pred_retrievals")[:, -1],
            _get(outputs, "pred_interleave_image")[:, -1],
            logit_scale,
        )
        return out

    # ------------------------------------------------------------------ retrieval
    def loss_retrievals(self, outputs, targets, logit_scale) -> torch.Tensor:
        img = _get(outputs, "pred_retrievals")[:, -1]
        txt = _get(outputs, "pred_retrievals_lang")[:, -1]
        loss = itc_loss(img, txt, logit_scale)
        if self.fine_grained_weight == 0:
            return loss
        tokens = [torch.as_tensor(_get(t, "caption_tokens", b)) for b, t in enumerate(targets)]
        valid = [torch.as_tensor(_get(t, "caption_valid", b)).bool() for b, t in enumerate(targets)]
        tok = nn.utils.rnn.pad_sequence(tokens, batch_first=True).to(img)
        tok_valid = nn.utils.rnn.pad_sequence(valid, batch_first=True).to(img.device)
        fine = fine_grained_loss(_get(outputs, "pred_captions"), tok, tok_valid, logit_scale)
        return loss + self.fine_grained_weight * fine

    # ------------------------------------------------------------------ shared pieces
    def _prompted_terms(
        self, prefix, matcher, pred_masks, logits, tmasks, zero_of, rand_fn=None, batch=None
    ):
        """CE over proposals + mask losses for spatial / interleave (empty GT items skipped)."""
        if not any(bool(m.any()) for m in tmasks):
            # no positive GT pixel in the batch: every item would be skipped; no matching (and no
            # draws), as in the official code
            zero = _zero(pred_masks.anchor(), *zero_of)
            return {f"{prefix}_bce": zero, f"{prefix}_dice": zero, f"{prefix}_ce": zero}
        indices = matcher.match_by_logits(
            [lg.detach() for lg in logits], pred_masks.detach(), tmasks, rand_fn
        )
        ce_rows, ce_targets, picks, tgt_list = [], [], [], []
        for b, (si, ti) in enumerate(indices):
            if len(ti) == 0:
                continue
            tm = tmasks[b].to(pred_masks.device)
            keep = tm[ti].flatten(1).sum(-1) > 0
            si, ti = si[keep], ti[keep]
            ce_rows.append(logits[b].t()[ti])  # [n_kept, Q]: one distribution over proposals each
            ce_targets.append(si)
            picks.append((b, si))
            tgt_list.append((tm, ti))
        num = sum(len(s) for s in ce_targets)
        if num == 0:
            zero = _zero(pred_masks.anchor(), *zero_of)
            return {f"{prefix}_bce": zero, f"{prefix}_dice": zero, f"{prefix}_ce": zero}
        rows = torch.cat(ce_rows).float()
        onehot = torch.zeros_like(rows)
        onehot[torch.arange(len(rows), device=rows.device), torch.cat(ce_targets)] = 1.0
        # soft-target form of the CE (same value as F.cross_entropy, and bitwise the official sum)
        ce = torch.sum(-onehot * F.log_softmax(rows, dim=-1), dim=-1).mean()

        def tgt():
            return torch.cat([tm[ti] for tm, ti in tgt_list])

        out = self._mask_terms(prefix, pred_masks, picks, tgt, num, rand_fn, batch)
        out[f"{prefix}_ce"] = ce
        return out

    def _mask_terms(
        self, prefix, pred_all, picks, tgt, num_masks, rand_fn=None, batch=None
    ) -> Dict[str, object]:
        """BCE and dice of the rows ``picks`` of ``pred_all`` against ``tgt()`` [R, H, W] at the
        importance-sampled points. The points are drawn now (draw order); with a ``batch`` and
        factored masks the rows are requested from it and the two values are pending."""
        if sum(len(index) for _, index in picks) == 0:
            zero = _zero(pred_all.anchor())
            return {f"{prefix}_bce": zero, f"{prefix}_dice": zero}
        terms = MaskTerms(
            prefix,
            pred_all,
            picks,
            tgt,
            num_masks,
            num_points=self.num_points,
            oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio,
            rand_fn=rand_fn,
            batch=batch,
        )
        return terms.entries()


# ---------------------------------------------------------------------- helpers
def _get(container: Mapping, key: str, index: Optional[int] = None):
    if key not in container:
        where = "outputs" if index is None else f"targets[{index}]"
        raise KeyError(f"{where} has no key '{key}' (keys: {sorted(container)})")
    return container[key]


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the graph (so DDP sees every parameter used)."""
    return sum(t.sum() * 0.0 for t in tensors)


def _masks(outputs: Mapping, key: str) -> MaskLogits:
    """Mask output ``key`` as mask logits: factored when the interface left it so
    (:class:`~find_plugin.core.mask_logits.LayerOutputs`), else the [B, n, h, w] tensor."""
    if hasattr(outputs, "mask_logits"):
        if key not in outputs:
            _get(outputs, key)  # the KeyError naming the keys
        return outputs.mask_logits(key)
    return as_mask_logits(_get(outputs, key), key)


def _gather_tgt(masks: Sequence[torch.Tensor], indices, like: MaskLogits) -> torch.Tensor:
    """Matched target masks [n, H, W] (dtype of ``like``); smaller masks are zero-padded
    bottom/right to the batch max (the same layout as the padded image batch)."""
    parts = [m.to(like.device)[tgt] for m, (_, tgt) in zip(masks, indices)]
    parts = [p for p in parts if p.shape[0] > 0]
    if not parts:
        return torch.zeros((0,) + like.size, dtype=like.dtype, device=like.device)
    height = max(p.shape[1] for p in parts)
    width = max(p.shape[2] for p in parts)
    parts = [
        F.pad(p.to(like.dtype), (0, width - p.shape[2], 0, height - p.shape[1])) for p in parts
    ]
    return torch.cat(parts)


def _average_count(count: int, device: torch.device) -> float:
    """Number of GT masks averaged over processes, at least 1 (the loss normaliser)."""
    value = torch.tensor([float(count)], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return max(value.item(), 1.0)
