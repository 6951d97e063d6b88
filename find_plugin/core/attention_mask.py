"""Block attention masks of the combined FIND sequence, built from task prototypes.

Masks are boolean in the SDPA convention: True = the key may be attended.

* Condition attention (self-attention) [B, N, N]: row variable i may attend column variable j iff
  j is in i's ``self_attend`` list (after training-time swaps); padding rows and columns are
  blocked (official MASKING, both directions). Index constraints are ignored (official).
* Content attention (cross-attention) over the keys [image features of the level (hw) ; the
  sequence itself (N)] -> [B, N, hw + N]. A row reads either image keys or token keys, never
  both, so one softmax over the combined keys equals the official two separate calls (masked keys
  get exactly zero weight: the denominators never mix).
  - image rows: ``prev_mask`` (blocked where the previous layer's mask of this row is < 0.5),
    ``global``, ``memory_prev_mask``; rows left with no key become fully unmasked (official).
  - token rows: ``padding`` (non-padding keys of the listed variables) or ``indexed`` (and the
    key's item index equals the row's item index, NO_ITEM matching nothing). Rows with no key stay
    empty (zero output).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from .conventions import no_item
from .prototypes import VariableSpec

MODE_NONE, MODE_PREV, MODE_GLOBAL, MODE_MEMORY = 0, 1, 2, 3
_IMAGE_MODE = {"prev_mask": MODE_PREV, "global": MODE_GLOBAL, "memory_prev_mask": MODE_MEMORY}


@dataclass
class SequenceLayout:
    """Where every variable lives in the combined sequence (rows ``slices[name]``)."""

    specs: List[VariableSpec]
    slices: Dict[str, Tuple[int, int]]
    padding: torch.Tensor  # [B, N] bool, True = padding row (absent item / padded token)
    index: torch.Tensor  # [B, N] long, item index (NO_ITEM when the variable has none)
    has_index: Dict[str, bool]

    @property
    def length(self) -> int:
        return self.padding.shape[1]

    def rows(self, name: str) -> torch.Tensor:
        s, e = self.slices[name]
        return torch.arange(s, e, device=self.padding.device)

    def present(self, name: str) -> bool:
        return name in self.slices


def self_attention_allowed(
    layout: SequenceLayout, swaps: Optional[Dict[str, Dict[str, str]]] = None
) -> torch.Tensor:
    """[B, N, N] bool. ``swaps[row_var][from] = to`` replaces a column variable (DYNAMICS)."""
    n = layout.length
    rule = torch.zeros(n, n, dtype=torch.bool, device=layout.padding.device)
    for spec in layout.specs:
        r0, r1 = layout.slices[spec.name]
        cols = [(swaps or {}).get(spec.name, {}).get(c, c) for c in spec.self_attend]
        for col in cols:
            if layout.present(col):
                c0, c1 = layout.slices[col]
                rule[r0:r1, c0:c1] = True
    valid = ~layout.padding
    return rule[None] & valid[:, :, None] & valid[:, None, :]


def token_cross_allowed(layout: SequenceLayout) -> torch.Tensor:
    """[B, N, N] bool: token part of the content-attention mask (static over layers)."""
    bsz, n = layout.padding.shape
    allowed = torch.zeros(bsz, n, n, dtype=torch.bool, device=layout.padding.device)
    valid = ~layout.padding
    for spec in layout.specs:
        rule = spec.cross
        if rule is None or rule.reads_image:
            continue
        r0, r1 = layout.slices[spec.name]
        for key in rule.keys:
            if not layout.present(key):
                continue
            c0, c1 = layout.slices[key]
            block = valid[:, r0:r1, None] & valid[:, None, c0:c1]
            if rule.mode == "indexed":
                for name in (spec.name, key):
                    if not layout.has_index[name]:
                        raise ValueError(
                            f"indexed attention {spec.name} -> {key}: variable {name!r} has no "
                            "item index (give 'query_index' / 'token_index' in its task inputs)"
                        )
                rows, keys = layout.index[:, r0:r1], layout.index[:, None, c0:c1]
                # a row or key of no item (e.g. a text token of the legend) matches nothing
                same = (rows[..., None] == keys) & ~no_item(rows)[..., None]
                block = block & same
            allowed[:, r0:r1, c0:c1] = block
    return allowed


def image_modes(layout: SequenceLayout) -> torch.Tensor:
    """[N] long: how each row reads the image (MODE_* constants)."""
    modes = torch.zeros(layout.length, dtype=torch.long, device=layout.padding.device)
    for spec in layout.specs:
        if spec.cross is not None and spec.cross.reads_image:
            r0, r1 = layout.slices[spec.name]
            modes[r0:r1] = _IMAGE_MODE[spec.cross.mode]
    return modes


def image_allowed(
    modes: torch.Tensor,
    hw: int,
    *,
    batch: int,
    mask_rows: torch.Tensor,
    mask_blocked: Optional[torch.Tensor],
    memory_rows: Optional[torch.Tensor] = None,
    memory_blocked: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """[B, N, hw] bool image part of the content-attention mask for one layer.

    mask_rows [M] are the rows whose previous-layer mask is ``mask_blocked`` [B, M, hw] (True =
    blocked); memory rows get ``memory_blocked`` [B, 1 or n_mem, hw]."""
    reads = modes != MODE_NONE
    allowed = reads[None, :, None].expand(batch, -1, hw).clone()
    if mask_blocked is not None:
        prev = (modes[mask_rows] == MODE_PREV)[None, :, None]
        cur = allowed[:, mask_rows]
        allowed[:, mask_rows] = torch.where(prev, ~mask_blocked, cur)
    if memory_rows is not None and memory_blocked is not None:
        allowed[:, memory_rows] = (~memory_blocked).expand(-1, len(memory_rows), -1)
    empty = reads[None, :] & ~allowed.any(-1)
    return allowed | empty[..., None]
