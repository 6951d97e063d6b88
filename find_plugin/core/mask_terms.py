"""The point-sampled mask terms (BCE and dice) of a set of matched rows, made now or batched.

The criterion computes, per layer and mask group, the BCE and dice of the matched prediction rows
against their targets at importance-sampled points (:mod:`~find_plugin.core.point_losses`). The
points' uniform draws happen when the terms are set up, in the official order; the rows themselves
may come from a :class:`~find_plugin.core.mask_logits.RowBatch`, which makes the rows of every
layer in one product per image once all layers were set up. :class:`MaskTerms` holds one set;
:meth:`MaskTerms.entries` gives its two values, or :class:`Pending` placeholders that
:func:`resolve` turns into values after the batch can be made.
"""

from typing import Callable, Dict, Optional, Union

import torch

from .mask_logits import FactoredMasks, MaskLogits, RowBatch, RowPicks, make_rows
from .point_losses import (
    RandFn,
    dice_loss,
    draw_point_candidates,
    sample_mask_points,
    sigmoid_bce_loss,
)

__all__ = ["MaskTerms", "Pending", "resolve"]


class MaskTerms:
    """``{prefix}_bce`` and ``{prefix}_dice`` of the rows ``picks`` of ``pred`` against the target
    masks [R, H, W] (R = the picked rows, in order), each summed over rows and divided by
    ``num_masks``. ``tgt`` is those masks, or a function making them when the terms are computed
    (pending terms then do not hold every layer's matched target masks at once).

    ``num_points`` None reads every pixel centre of the prediction grid (no draws); otherwise
    ``num_points * oversample_ratio`` candidates and the fill-up points are drawn here, from
    ``rand_fn``. With a ``batch`` and factored ``pred``, the rows are requested from it (made
    later, with every other request); otherwise they are made here.
    """

    def __init__(
        self,
        prefix: str,
        pred: MaskLogits,
        picks: RowPicks,
        tgt: Union[torch.Tensor, Callable[[], torch.Tensor]],
        num_masks: float,
        *,
        num_points: Optional[int],
        oversample_ratio: float,
        importance_sample_ratio: float,
        rand_fn: Optional[RandFn] = None,
        batch: Optional[RowBatch] = None,
    ):
        self.keys = (f"{prefix}_bce", f"{prefix}_dice")
        self.tgt, self.num_masks = tgt, num_masks
        self.sampling = dict(
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )
        self.draws = None
        if num_points is not None:
            num_rows = sum(len(index) for _, index in picks)
            self.draws = draw_point_candidates(
                num_rows, rand_fn=rand_fn, device=pred.device, **self.sampling
            )
        self._batch, self._handle, self._rows = None, None, None
        if batch is not None and isinstance(pred, FactoredMasks):
            self._batch, self._handle = batch, batch.request(pred, picks)
        else:
            self._rows = make_rows(pred, picks)
        self._values: Optional[Dict[str, torch.Tensor]] = None

    @property
    def pending(self) -> bool:
        """True while the rows wait for their batch."""
        return self._rows is None

    def values(self) -> Dict[str, torch.Tensor]:
        """The two terms (makes the batch's rows if they are not made yet)."""
        if self._values is None:
            rows = self._rows if self._rows is not None else self._batch.get(self._handle)
            tgt = self.tgt() if callable(self.tgt) else self.tgt
            logits, labels = sample_mask_points(
                rows.float(), tgt, draws=self.draws, **self.sampling
            )
            self._values = {
                self.keys[0]: sigmoid_bce_loss(logits, labels, self.num_masks),
                self.keys[1]: dice_loss(logits, labels, self.num_masks),
            }
        return self._values

    def entries(self) -> Dict[str, Union[torch.Tensor, "Pending"]]:
        """The two terms, or placeholders for them while :attr:`pending`."""
        if self.pending:
            return {key: Pending(self, key) for key in self.keys}
        return self.values()


class Pending:
    """One term of a :class:`MaskTerms` whose rows are not made yet (see :func:`resolve`)."""

    def __init__(self, terms: MaskTerms, key: str):
        self.terms, self.key = terms, key

    def __repr__(self) -> str:
        return f"Pending({self.key!r})"


def resolve(value: Union[torch.Tensor, Pending]) -> torch.Tensor:
    """A loss value: a tensor as it is, a :class:`Pending` term computed (once per set)."""
    return value.terms.values()[value.key] if isinstance(value, Pending) else value
