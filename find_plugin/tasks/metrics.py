"""Streaming FIND evaluation metrics, computed as the official evaluators do (spec §5.4; official
``datasets/evaluation/{grounding,retrieval,interactive}_evaluation.py`` and ``misc.get_iou``).

Each metric has ``update(...)``, ``compute() -> dict``, ``state() -> dict`` of CPU tensors and
``merge(states)``: a multi-process evaluator gathers every rank's ``state()`` to rank 0 and
merges them (in rank order) into an empty metric, which then computes the same numbers as one
metric fed everything. States keep per-item values (two integers per grounding mask, an IoU
vector per interactive instance, the embeddings for retrieval), so a merge is exact.

Official values keep their official names and float32 arithmetic; where an official quirk is a
defect, the corrected value is reported too, under ``<name>_exact``.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import torch

__all__ = [
    "GROUNDING_THRESHOLDS",
    "GroundingMetric",
    "InteractiveMetric",
    "NOC_THRESHOLDS",
    "RETRIEVAL_KS",
    "RetrievalMetric",
    "interactive_iou",
    "retrieval_recall",
    "streamed_topk",
]

GROUNDING_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
NOC_THRESHOLDS = (0.5, 0.8, 0.85, 0.9)
RETRIEVAL_KS = (1, 5, 10)


class _Metric:
    """Shared state handling: ``_keys`` name per-item tensors concatenated along dim 0."""

    _keys: Sequence[str] = ()

    def reset(self) -> None:
        self._parts: Dict[str, List[torch.Tensor]] = {k: [] for k in self._keys}

    def _cat(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        parts = self._parts[key]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)

    def merge(self, states: Iterable[Dict[str, torch.Tensor]]) -> "_Metric":
        """Append the items of each state (e.g. gathered from every rank, in rank order)."""
        for i, s in enumerate(states):
            if not isinstance(s, dict) or set(s) != set(self._keys):
                got = sorted(s) if isinstance(s, dict) else type(s).__name__
                raise ValueError(
                    f"states[{i}] must be a dict with keys {sorted(self._keys)}, got {got}"
                )
            for k in self._keys:
                if s[k].numel():  # an empty rank adds nothing (and has no trailing shape)
                    self._parts[k].append(s[k].detach().cpu())
        return self

    @classmethod
    def from_states(cls, states: Iterable[Dict[str, torch.Tensor]], **kwargs) -> "_Metric":
        return cls(**kwargs).merge(states)


def _f32(x) -> torch.Tensor:
    return torch.as_tensor(x).to(torch.float32)


class GroundingMetric(_Metric):
    """Referring / grounding / interleave segmentation (official ``GroundingEvaluator``).

    Official values (percentages, float32 like the official code): ``precision@t`` for t in
    0.5..0.9, ``cIoU`` = 100 * sum I / sum U, ``mIoU`` = 100 * mean IoU with the per-mask
    ``IoU = I / (U + 1e-6)`` in float32. Quirks reproduced: the epsilon survives float32 only for
    U < 32 pixels, so a small mask exactly at a threshold (I=2, U=4 at 0.5) fails it; thresholds
    compare float32 with float32(t), so 7/10 of a large mask passes 0.7; an empty GT counts as
    IoU 0 in every mean (never skipped); every mask weighs the same in mIoU / precision (images
    with more phrases weigh more), cIoU weighs pixels; all-empty masks: cIoU is NaN, mIoU 0 (the
    official data side gives a phrase whose panoptic segment is missing an all-zero GT).
    Corrected values: ``mIoU_exact`` (IoU = I / U in float64, empty union = 0),
    ``precision@t_exact`` (exact rational comparison I / U >= t), ``cIoU_exact`` (float64).
    The official evaluator sums IoUs in float32 image by image; here they are summed in float64
    and cast once, which can differ from it in the last float32 bit.
    """

    _keys = ("intersection", "union")

    def __init__(self):
        self.reset()

    def update(self, pred, gt) -> None:
        """``pred``: [n, H, W] (or [H, W]) mask logits (foreground iff > 0, strict) or bool masks;
        ``gt``: same shape, foreground iff nonzero. Both at the original image size."""
        pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
        if pred.dim() not in (2, 3) or pred.shape != gt.shape:
            raise ValueError(
                f"pred and gt must both be [n, H, W] or [H, W] with the same shape, got "
                f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)}"
            )
        p = pred if pred.dtype == torch.bool else pred > 0.0
        t = gt != 0
        if p.dim() == 2:
            p, t = p[None], t[None]
        self._parts["intersection"].append((p & t).flatten(1).sum(1).cpu())
        self._parts["union"].append((p | t).flatten(1).sum(1).cpu())

    def state(self) -> Dict[str, torch.Tensor]:
        return {k: self._cat(k, torch.int64) for k in self._keys}

    def compute(self) -> Dict[str, float]:
        inter, union = self._cat("intersection", torch.int64), self._cat("union", torch.int64)
        total = inter.numel()
        if total == 0:
            raise ValueError("GroundingMetric.compute: no masks were added (update() never called)")
        iou = _f32(inter) / (_f32(union) + 1e-6)
        out = {}
        for t in GROUNDING_THRESHOLDS:
            out[f"precision@{t}"] = (_f32(int((iou >= t).sum())) * 100 / total).item()
        cum_i, cum_u = int(inter.sum()), int(union.sum())
        out["cIoU"] = (_f32(cum_i) * 100.0 / _f32(cum_u)).item()
        out["mIoU"] = (_f32(iou.double().sum()) * 100.0 / total).item()
        exact = torch.where(union > 0, inter.double() / union.clamp(min=1).double(), 0.0)
        out["cIoU_exact"] = 100.0 * cum_i / cum_u if cum_u else float("nan")
        out["mIoU_exact"] = 100.0 * exact.sum().item() / total
        for t in GROUNDING_THRESHOLDS:
            tenths = round(t * 10)  # exact: 10 * I >= tenths * U, an empty union never passes
            hit = (union > 0) & (10 * inter >= tenths * union)
            out[f"precision@{t}_exact"] = 100.0 * int(hit.sum()) / total
        return out


def interactive_iou(pred, gt, ignore=None) -> torch.Tensor:
    """Per-click IoU of the official interactive evaluation (``misc.get_iou``).

    ``pred``: [..., H, W] bool; ``gt``: same shape, bool or integer (nonzero = object; -1 =
    ignore, VOC's boundary band); ``ignore``: optional extra bool pixels to leave out.
    Returns float32 ``|gt & pred & ~ign| / |(gt | pred) & ~ign|`` per mask, no epsilon: an empty
    union gives NaN (official)."""
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.shape != gt.shape or pred.dim() < 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must be [..., H, W] alike"
        )
    ign = gt == -1 if gt.dtype != torch.bool else torch.zeros_like(gt)
    if ignore is not None:
        ignore = torch.as_tensor(ignore).to(gt.device)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore must have shape {tuple(gt.shape)}, got {tuple(ignore.shape)}")
        ign = ign | (ignore != 0)
    p, t = (pred != 0) & ~ign, (gt != 0) & ~ign
    inter = (p & t).flatten(-2).sum(-1)
    union = (p | t).flatten(-2).sum(-1)
    return _f32(inter) / _f32(union)


class InteractiveMetric(_Metric):
    """Interactive segmentation (official ``InteractiveEvaluator``).

    Input per instance: its IoUs after clicks 1..``max_clicks``. ``noc@t`` (t in 0.5, 0.8, 0.85,
    0.9) = mean over instances of the first 1-based click with IoU >= t (float32 comparison), else
    ``max_clicks`` (a NaN IoU never passes); with max_clicks = 1 every NoC is 1.0.
    ``miou@iter{k}`` = float32 sum of the IoUs after click k / count: a fraction in [0, 1], NaN if
    any IoU is NaN (official). The official evaluator reports one k (``IOU_ITER``, 1 in FIND's
    configs); here every k in 1..max_clicks is reported.
    """

    _keys = ("ious",)

    def __init__(self, max_clicks: int = 1):
        if int(max_clicks) < 1:
            raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
        self.max_clicks = int(max_clicks)
        self.reset()

    def update(self, ious) -> None:
        """``ious``: [max_clicks] (one instance) or [n, max_clicks] IoU after each click."""
        ious = torch.as_tensor(ious)
        ious = ious[None] if ious.dim() == 1 else ious
        if ious.dim() != 2 or ious.shape[1] != self.max_clicks:
            raise ValueError(
                f"ious must be [n, {self.max_clicks}] or [{self.max_clicks}], "
                f"got {tuple(ious.shape)}"
            )
        self._parts["ious"].append(_f32(ious).detach().cpu())

    def merge(self, states):
        states = list(states)
        for i, s in enumerate(states):
            shape = tuple(s["ious"].shape) if isinstance(s, dict) and "ious" in s else None
            if shape is not None and (len(shape) != 2 or shape[1] != self.max_clicks):
                raise ValueError(f"states[{i}]['ious'] must be [n, {self.max_clicks}], got {shape}")
        return super().merge(states)

    def state(self) -> Dict[str, torch.Tensor]:
        parts = self._parts["ious"]
        return {"ious": torch.cat(parts) if parts else torch.zeros(0, self.max_clicks)}

    def compute(self) -> Dict[str, float]:
        ious = self.state()["ious"]
        n = ious.shape[0]
        if n == 0:
            raise ValueError("InteractiveMetric.compute: no instances were added")
        out = {}
        for t in NOC_THRESHOLDS:
            passed = ious >= t
            first = passed.int().argmax(dim=1) + 1  # argmax returns the first maximum
            noc = torch.where(passed.any(dim=1), first, torch.full_like(first, self.max_clicks))
            out[f"noc@{t}"] = int(noc.sum()) * 1.0 / n
        for k in range(self.max_clicks):
            out[f"miou@iter{k + 1}"] = ious[:, k].sum().item() / n
        return out


def streamed_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    query_chunk: int = 1024,
    gallery_chunk: int = 4096,
) -> torch.Tensor:
    """Indices [Nq, k] of the k gallery rows with the largest ``queries @ gallery.T``, best first,
    computed chunk by chunk with a running top-k: no [Nq, Ng] matrix is ever built. Ties go to
    the lower gallery index (a stable sort), whatever the chunk sizes; ``torch.topk``, used by the
    official evaluator, orders exact ties arbitrarily, which only matters for exactly equal
    scores at the k-th place."""
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must be "
            "[N, D] with the same D"
        )
    if int(query_chunk) < 1 or int(gallery_chunk) < 1:
        raise ValueError(
            f"query_chunk and gallery_chunk must be >= 1, got {query_chunk}, {gallery_chunk}"
        )
    k = min(int(k), gallery.shape[0])
    out = []
    for qs in range(0, queries.shape[0], int(query_chunk)):
        q = queries[qs : qs + int(query_chunk)]
        best_v = q.new_zeros(q.shape[0], 0)
        best_i = torch.zeros(q.shape[0], 0, dtype=torch.long, device=q.device)
        for gs in range(0, gallery.shape[0], int(gallery_chunk)):
            scores = q @ gallery[gs : gs + int(gallery_chunk)].T
            scores, idx = _chunk_candidates(scores, k, gs)
            # Earlier (lower-index) candidates come first, so the stable sort keeps ties in order.
            v, order = torch.cat([best_v, scores], 1).sort(dim=1, descending=True, stable=True)
            best_v, best_i = v[:, :k], torch.cat([best_i, idx], 1).gather(1, order[:, :k])
        out.append(best_i)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long, device=queries.device)


def _chunk_candidates(scores: torch.Tensor, k: int, offset: int):
    """The only entries of a score chunk [q, c] that can enter a top-k: (scores [q, m], gallery
    indices [q, m]) in increasing index order. Without a tie at a row's k-th place these are the
    row's top-k (a linear-time ``topk`` instead of sorting the chunk); with one, the whole chunk,
    so that the caller's stable sort still gives ties to the lower index."""
    kk = min(k, scores.shape[1])
    if kk < scores.shape[1]:
        top = scores.topk(kk, dim=1)
        if not bool(((scores >= top.values[:, -1:]).sum(1) > kk).any()):
            cols = top.indices.sort(dim=1).values
            return scores.gather(1, cols), cols + offset
    idx = torch.arange(offset, offset + scores.shape[1], device=scores.device)
    return scores, idx.expand_as(scores)


def _normalise(x: torch.Tensor, name: str) -> torch.Tensor:
    x = _f32(x)
    norm = x.norm(dim=-1, keepdim=True)
    if not bool(torch.isfinite(x).all()) or bool((norm == 0).any()):
        raise ValueError(f"{name} must be finite with nonzero rows (they are L2-normalised)")
    return x / norm  # no epsilon, as the official evaluator


def retrieval_recall(
    image_embeds,
    image_ids,
    text_embeds,
    text_ids,
    *,
    query_chunk: int = 1024,
    gallery_chunk: int = 4096,
) -> Dict[str, float]:
    """Official image-text recall (``RetrievalEvaluator.evaluate_default``), streamed.

    ``image_embeds`` [Ni, D] with ``image_ids`` [Ni]; ``text_embeds`` [Nt, D] with ``text_ids``
    [Nt] = the id of each caption's image. Both sides are L2-normalised, scores are float32
    cosines. ``tr{k}``: an image is a hit if one of its top-k captions carries its id, mean over
    images; ``ir{k}``: a caption is a hit if one of its top-k images has its id, mean over
    captions. Reported as round(100 * x, 3); ``irtr`` = 100 * (ir1 + tr1) (float32 sum of the
    unrounded values), rounded the same way. Needs >= 10 images and >= 10 captions."""
    img, txt = torch.as_tensor(image_embeds), torch.as_tensor(text_embeds)
    iids, tids = torch.as_tensor(image_ids).reshape(-1), torch.as_tensor(text_ids).reshape(-1)
    for name, emb, ids in (("image", img, iids), ("text", txt, tids)):
        if emb.dim() != 2 or emb.shape[0] != ids.numel():
            raise ValueError(
                f"{name}_embeds must be [N, D] with one {name}_id per row, got "
                f"{tuple(emb.shape)} and {ids.numel()} ids"
            )
        if emb.shape[0] < max(RETRIEVAL_KS):
            raise ValueError(
                f"retrieval needs at least {max(RETRIEVAL_KS)} {name} embeddings for top-10, "
                f"got {emb.shape[0]}"
            )
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"image_embeds dim {img.shape[1]} != text_embeds dim {txt.shape[1]}")
    img, txt = _normalise(img, "image_embeds"), _normalise(txt, "text_embeds")
    iids, tids = iids.to(img.device), tids.to(img.device)
    chunks = dict(query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    top_t = streamed_topk(img, txt, max(RETRIEVAL_KS), **chunks)  # image -> captions
    top_i = streamed_topk(txt, img, max(RETRIEVAL_KS), **chunks)  # caption -> images
    raw = {}
    for k in RETRIEVAL_KS:
        tr_hits = (tids[top_t[:, :k]] == iids[:, None]).any(dim=1)
        ir_hits = (iids[top_i[:, :k]] == tids[:, None]).any(dim=1)
        raw[f"tr{k}"] = _f32(int(tr_hits.sum())) / img.shape[0]  # float32 mean, as official
        raw[f"ir{k}"] = _f32(int(ir_hits.sum())) / txt.shape[0]
    out = {"irtr": round((raw["ir1"] + raw["tr1"]).item() * 100, 3)}
    for name in ("ir1", "ir5", "ir10", "tr1", "tr5", "tr10"):
        out[name] = round(raw[name].item() * 100, 3)
    return out


class RetrievalMetric(_Metric):
    """Streaming image-text retrieval (see :func:`retrieval_recall`). Embeddings are kept (on
    CPU) until ``compute``, which ranks them chunk by chunk, optionally on ``device``."""

    _keys = ("image_embeds", "image_ids", "text_embeds", "text_ids")

    def __init__(self, *, query_chunk: int = 1024, gallery_chunk: int = 4096):
        self.query_chunk, self.gallery_chunk = int(query_chunk), int(gallery_chunk)
        self.reset()

    def update(self, *, image_embeds=None, image_ids=None, text_embeds=None, text_ids=None) -> None:
        """Add images (``image_embeds`` [n, D] + ``image_ids`` [n]) and/or captions
        (``text_embeds`` [m, D] + ``text_ids`` [m], the id of each caption's image)."""
        for side, emb, ids in (("image", image_embeds, image_ids), ("text", text_embeds, text_ids)):
            if emb is None and ids is None:
                continue
            if emb is None or ids is None:
                raise ValueError(f"{side}_embeds and {side}_ids must be given together")
            emb, ids = torch.as_tensor(emb).detach(), torch.as_tensor(ids).reshape(-1)
            if emb.dim() != 2 or emb.shape[0] != ids.numel():
                raise ValueError(
                    f"{side}_embeds must be [n, D] with n = len({side}_ids), got "
                    f"{tuple(emb.shape)} and {ids.numel()} ids"
                )
            self._parts[f"{side}_embeds"].append(_f32(emb).cpu())
            self._parts[f"{side}_ids"].append(ids.long().cpu())

    def state(self) -> Dict[str, torch.Tensor]:
        return {
            k: self._cat(k, torch.int64 if k.endswith("ids") else torch.float32) for k in self._keys
        }

    def compute(self, device: Optional[torch.device] = None) -> Dict[str, float]:
        s = {k: v.to(device) if device is not None else v for k, v in self.state().items()}
        return retrieval_recall(
            s["image_embeds"],
            s["image_ids"],
            s["text_embeds"],
            s["text_ids"],
            query_chunk=self.query_chunk,
            gallery_chunk=self.gallery_chunk,
        )
