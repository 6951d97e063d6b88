"""Mask logits as a dense tensor or factored as (mask embeddings, mask features).

The mask head is linear in the mask features: the logits of row q of image b are
``einsum("c,chw->hw", embed[b, q], features[b])`` ([B, n, C] embeddings, [B, C, H/4, W/4]
stride-4 mask features). Training reads the masks of every layer, but only

* at ``num_points`` random points shared by all rows of an image (the matchers' costs): reading the
  mask features at those points, then one matmul with the embeddings of all rows, gives the same
  values (bilinear sampling is linear) for a fraction of the work of the full-resolution masks;
* at the points of the matched rows (the point-sampled losses): only those few rows are made at
  full resolution (the uncertainty sampling reads them at ``oversample_ratio`` x ``num_points``
  candidates, which for the default sizes are more points than the grid has pixels).

Both read the same logits as the full-resolution masks up to float rounding (checked by
``tests/core/test_core_mask_logits.py``). :class:`DenseMasks` and :class:`FactoredMasks` give the
criterion and the matchers one interface for both forms (:func:`as_mask_logits`);
:class:`LayerOutputs` is the interface's per-layer output mapping whose mask outputs stay factored
until a consumer reads them (then all mask rows of that layer are made at once, with the einsum the
dense outputs always used, so the numbers read are the same as before).
"""

from collections.abc import MutableMapping
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .point_losses import point_sample, point_sample_vectors

__all__ = [
    "DenseMasks",
    "FactoredMasks",
    "LayerOutputs",
    "MaskLogits",
    "RowBatch",
    "RowPicks",
    "as_mask_logits",
    "make_rows",
]


class DenseMasks:
    """Mask logits given as a tensor ``logits`` [B, n, h, w]."""

    def __init__(self, logits: torch.Tensor):
        if not torch.is_tensor(logits) or logits.dim() != 4:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise ValueError(f"pred masks must be [B, Q, h, w], got {shape}")
        self.logits = logits

    batch_size = property(lambda self: self.logits.shape[0])
    num_rows = property(lambda self: self.logits.shape[1])
    size = property(lambda self: tuple(self.logits.shape[-2:]))
    device = property(lambda self: self.logits.device)
    dtype = property(lambda self: self.logits.dtype)

    def detach(self) -> "DenseMasks":
        return DenseMasks(self.logits.detach())

    def rows(self, b: int, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` [R] of image b at full resolution: [R, h, w] (gradient flows)."""
        return self.logits[b, index]

    def sample(self, b: int, coords: torch.Tensor) -> torch.Tensor:
        """Every row of image b read at the normalised (x, y) ``coords`` [P, 2]: [n, P] float32
        (the rows are read as channels of one map: the same values as row by row)."""
        return point_sample(self.logits[b : b + 1].float(), coords[None])[0]

    def anchor(self) -> torch.Tensor:
        """A tensor connected to the logits' inputs (zero losses built on it keep every
        parameter used)."""
        return self.logits


class FactoredMasks:
    """Mask logits ``einsum("bqc,bchw->bqhw", embed, features)`` kept as ``embed`` [B, n, C] and
    ``features`` [B, C, h, w]; ``sample_features``: the same features in channels-last memory
    format (optional; :meth:`sample` reads them in place, else it makes that layout per call),
    made once per pass by the interface."""

    def __init__(
        self,
        embed: torch.Tensor,
        features: torch.Tensor,
        sample_features: Optional[torch.Tensor] = None,
    ):
        if embed.dim() != 3 or features.dim() != 4 or embed.shape[::2] != features.shape[:2]:
            raise ValueError(
                f"factored masks need embed [B, n, C] and features [B, C, h, w], got "
                f"{tuple(embed.shape)} and {tuple(features.shape)}"
            )
        if sample_features is not None and sample_features.shape != features.shape:
            raise ValueError(
                f"sample_features {tuple(sample_features.shape)} must have the shape of "
                f"features {tuple(features.shape)}"
            )
        self.embed, self.features = embed, features
        self.sample_features = features if sample_features is None else sample_features

    batch_size = property(lambda self: self.embed.shape[0])
    num_rows = property(lambda self: self.embed.shape[1])
    size = property(lambda self: tuple(self.features.shape[-2:]))
    device = property(lambda self: self.embed.device)
    dtype = property(lambda self: self.embed.dtype)

    def detach(self) -> "FactoredMasks":
        return FactoredMasks(
            self.embed.detach(), self.features.detach(), self.sample_features.detach()
        )

    def with_embed(self, embed: torch.Tensor) -> "FactoredMasks":
        """Other embeddings over the same features (e.g. a variable's rows)."""
        return FactoredMasks(embed, self.features, self.sample_features)

    def rows(self, b: int, index: torch.Tensor) -> torch.Tensor:
        return torch.einsum("rc,chw->rhw", self.embed[b, index], self.features[b])

    def sample(self, b: int, coords: torch.Tensor) -> torch.Tensor:
        points = point_sample_vectors(self.sample_features[b].float(), coords)  # [P, C]
        return self.embed[b].float() @ points.t()

    def anchor(self) -> torch.Tensor:
        # both inputs, so that a zero loss built on it reaches the mask features' producer too
        return self.embed.sum() + self.features.sum()

    def materialize(self) -> torch.Tensor:
        """The full-resolution logits [B, n, h, w]."""
        return torch.einsum("bqc,bchw->bqhw", self.embed, self.features)


MaskLogits = Union[DenseMasks, FactoredMasks]


def as_mask_logits(value, name: str = "pred_masks") -> MaskLogits:
    """A [B, n, h, w] tensor, :class:`DenseMasks` or :class:`FactoredMasks` -> mask logits."""
    if isinstance(value, (DenseMasks, FactoredMasks)):
        return value
    if torch.is_tensor(value):
        return DenseMasks(value)
    raise TypeError(
        f"{name}: expected a [B, Q, h, w] tensor, DenseMasks or FactoredMasks, got "
        f"{type(value).__name__}"
    )


#: Rows of mask logits to make at full resolution: (image b, row indices [R_b]) in output order.
RowPicks = Sequence[Tuple[int, torch.Tensor]]


def make_rows(pred: MaskLogits, picks: RowPicks) -> torch.Tensor:
    """The rows ``picks`` of ``pred`` at full resolution, concatenated: [sum R_b, h, w]."""
    parts = [pred.rows(b, index) for b, index in picks]
    return torch.cat(parts) if parts else _no_rows(pred)


def _no_rows(pred: MaskLogits) -> torch.Tensor:
    """Zero rows of ``pred``: [0, h, w]."""
    return torch.zeros((0,) + pred.size, dtype=pred.dtype, device=pred.device)


class RowBatch:
    """Full-resolution rows of several factored mask outputs, made together.

    The criterion makes the matched rows of every layer (a few each) at full resolution; one by
    one, each is a [R, C] x [C, h*w] product with R ~ 3 that streams the whole mask features
    through memory (and again in the backward pass). Collected here, the rows of every request
    over the same features are made with one product per image, then split back. The values
    are those of :func:`make_rows` up to float rounding.
    """

    def __init__(self):
        self._requests: List[Tuple[FactoredMasks, RowPicks]] = []
        self._made: Optional[List[torch.Tensor]] = None

    def request(self, pred: FactoredMasks, picks: RowPicks) -> int:
        """Ask for ``make_rows(pred, picks)``; returns the handle to read it with :meth:`get`."""
        if self._made is not None:
            raise RuntimeError("RowBatch: rows were already made; no more requests")
        self._requests.append((pred, [(int(b), index) for b, index in picks]))
        return len(self._requests) - 1

    def get(self, handle: int) -> torch.Tensor:
        """The rows of request ``handle`` (all requests are made on the first call)."""
        if self._made is None:
            self._made = self._make()
        return self._made[handle]

    def _make(self) -> List[torch.Tensor]:
        parts: List[Dict[int, torch.Tensor]] = [{} for _ in self._requests]
        groups: Dict[int, List[int]] = {}  # requests over the same features tensor
        for i, (pred, _) in enumerate(self._requests):
            groups.setdefault(id(pred.features), []).append(i)
        for members in groups.values():
            features = self._requests[members[0]][0].features
            for b in sorted({b for i in members for b, _ in self._requests[i][1]}):
                owners, embeds = [], []
                for i in members:
                    pred, picks = self._requests[i]
                    for k, (pb, index) in enumerate(picks):
                        if pb == b and len(index):
                            owners.append((i, k, len(index)))
                            embeds.append(pred.embed[b, index])
                if not embeds:
                    continue
                rows = torch.einsum("rc,chw->rhw", torch.cat(embeds), features[b])
                for (i, k, _), piece in zip(owners, rows.split([n for *_, n in owners])):
                    parts[i][k] = piece
        made = []
        for i, (pred, picks) in enumerate(self._requests):
            got = [parts[i][k] for k in range(len(picks)) if k in parts[i]]
            made.append(torch.cat(got) if got else _no_rows(pred))
        return made


class _Lazy:
    """Placeholder of a mask output not read yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<mask logits not made yet>"


_LAZY = _Lazy()


class LayerOutputs(MutableMapping):
    """Named outputs of one prediction layer whose mask outputs are made on first read.

    ``values``: the outputs that are tensors already (in order); ``masks``: the embeddings of all
    mask rows [B, M, C] and the mask features [B, C, h, w]; ``mask_slices``: output name -> its
    rows (start, end) among the M. Reading any mask output makes the [B, M, h, w] logits of every
    mask row once (the einsum the heads use for dense outputs) and returns its slice;
    :meth:`mask_logits` gives a mask output without making it. Assigning a key replaces it.
    """

    def __init__(
        self,
        values: Mapping[str, object],
        masks: FactoredMasks,
        mask_slices: Mapping[str, Tuple[int, int]],
    ):
        self._values: Dict[str, object] = dict(values)
        self._masks = masks
        self._slices = dict(mask_slices)
        self._full = None
        for key in self._slices:  # a key already in values keeps its place
            self._values[key] = _LAZY

    def __getitem__(self, key: str):
        value = self._values[key]
        if value is _LAZY:
            if self._full is None:
                self._full = self._masks.materialize()
            value = self._values[key] = self._full[:, slice(*self._slices[key])]
        return value

    def __setitem__(self, key: str, value) -> None:
        self._slices.pop(key, None)
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        self._slices.pop(key, None)
        del self._values[key]

    def __contains__(self, key) -> bool:  # Mapping's default would read (make) the value
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"LayerOutputs({list(self._values)})"

    def mask_logits(self, key: str) -> MaskLogits:
        """Output ``key`` as mask logits, factored when it was not replaced (KeyError if absent)."""
        if key in self._slices:
            a, b = self._slices[key]
            return self._masks.with_embed(self._masks.embed[:, a:b])
        return as_mask_logits(self[key], key)
