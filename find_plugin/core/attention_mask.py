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
    for name, cols in self_attention_keys(layout, swaps).items():
        r0, r1 = layout.slices[name]
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
    rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """[B, Nr, hw] bool image part of the content-attention mask for one layer, for the sequence
    rows ``rows`` [Nr] (default: all N rows; a row that does not read the image is all False).

    mask_rows [M] are the rows whose previous-layer mask is ``mask_blocked`` [B, M, hw] (True =
    blocked); memory rows get ``memory_blocked`` [B, 1 or n_mem, hw]."""
    n = modes.shape[0]
    if rows is None:
        rows = torch.arange(n, device=modes.device)
    at = torch.full((n,), -1, dtype=torch.long, device=modes.device)  # sequence row -> position
    at[rows] = torch.arange(len(rows), device=modes.device)
    reads = modes[rows] != MODE_NONE
    allowed = reads[None, :, None].expand(batch, -1, hw).clone()
    if mask_blocked is not None:
        sel = (at[mask_rows] >= 0) & (modes[mask_rows] == MODE_PREV)
        allowed[:, at[mask_rows[sel]]] = ~mask_blocked[:, sel]
    if memory_rows is not None and memory_blocked is not None:
        sel = at[memory_rows] >= 0
        blocked = memory_blocked if memory_blocked.shape[1] == 1 else memory_blocked[:, sel]
        allowed[:, at[memory_rows[sel]]] = (~blocked).expand(-1, int(sel.sum()), -1)
    empty = reads[None, :] & ~allowed.any(-1)
    return allowed | empty[..., None]


# ------------------------------------------------------------------------------------------------
# Row groups: the block structure of the masks, for attention over the allowed blocks only
# ------------------------------------------------------------------------------------------------
# Two groups are merged when the dense block over their union costs at most this many more
# (row, key) pairs than the two blocks apart: a separate attention call costs about as much.
MERGE_SLACK = 4096


@dataclass
class RowGroup:
    """Rows of the sequence that read the same keys in one attention.

    ``rows`` [nr] and ``cols`` [nc] long: sequence rows of the queries and of the keys (both in
    sequence order); ``allowed`` [B, nr, nc] bool: the mask's block (True = may attend). Outside
    ``cols`` every entry of these rows is blocked, so attending over ``cols`` alone gives the same
    softmax (blocked keys have exactly zero weight)."""

    rows: torch.Tensor
    cols: torch.Tensor
    allowed: torch.Tensor

    def select(self, keep: torch.Tensor) -> Optional["RowGroup"]:
        """The group's rows with ``keep`` [N] bool (None when none is kept)."""
        sel = keep[self.rows]
        if bool(sel.all()):
            return self
        if not bool(sel.any()):
            return None
        return RowGroup(self.rows[sel], self.cols, self.allowed[:, sel])


def row_groups(
    layout: SequenceLayout, keys: Dict[str, List[str]], allowed: torch.Tensor
) -> List[RowGroup]:
    """Group the rows of the variables in ``keys`` (row variable -> the variables it may read)
    by the keys they read; ``allowed`` [B, N, N] is the full mask. Variables reading the same
    (present) variables share a group; neighbouring groups are merged while the merged dense
    block costs at most :data:`MERGE_SLACK` more pairs. A variable none of whose key variables is
    present gets a group without keys (its rows attend nothing)."""
    by_keys: Dict[Tuple[str, ...], List[str]] = {}
    for spec in layout.specs:
        if spec.name not in keys:
            continue
        present = tuple(
            sorted(
                (k for k in keys[spec.name] if layout.present(k)), key=lambda k: layout.slices[k][0]
            )
        )
        by_keys.setdefault(present, []).append(spec.name)
    spans = []  # (row ranges, key ranges) per group, ranges as (start, end)
    for key_vars, row_vars in by_keys.items():
        rows = sorted(layout.slices[v] for v in row_vars)
        cols = sorted({layout.slices[k] for k in key_vars})
        spans.append((rows, cols))
    spans.sort(key=lambda s: s[0][0])
    merged: List[Tuple[list, list]] = []
    for rows, cols in spans:
        if merged:
            mrows, mcols = merged[-1]
            union = sorted(set(mcols) | set(cols))
            extra = _count(mrows + rows) * _count(union) - _count(mrows) * _count(mcols)
            if extra - _count(rows) * _count(cols) <= MERGE_SLACK:
                merged[-1] = (mrows + rows, union)
                continue
        merged.append((rows, cols))
    device = allowed.device
    groups = []
    for rows, cols in merged:
        r, c = _arange(rows, device), _arange(cols, device)
        groups.append(RowGroup(r, c, allowed[:, r][:, :, c]))
    return groups


def _count(ranges) -> int:
    return sum(e - s for s, e in ranges)


def _arange(ranges, device) -> torch.Tensor:
    if not ranges:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat([torch.arange(s, e, device=device) for s, e in sorted(ranges)])


def self_attention_keys(
    layout: SequenceLayout, swaps: Optional[Dict[str, Dict[str, str]]] = None
) -> Dict[str, List[str]]:
    """Row variable -> the variables its condition attention reads (after training swaps)."""
    return {
        s.name: [(swaps or {}).get(s.name, {}).get(c, c) for c in s.self_attend]
        for s in layout.specs
    }


def token_attention_keys(layout: SequenceLayout) -> Dict[str, List[str]]:
    """Row variable -> the token variables its content attention reads (token rules only)."""
    return {
        s.name: list(s.cross.keys)
        for s in layout.specs
        if s.cross is not None and not s.cross.reads_image
    }


@dataclass
class LayerRows:
    """The rows one interface layer computes; every other row keeps its content (nothing reads
    its update: visual-prompt tokens are replaced at the next layer, and after the last layer
    only the output rows are read).

    ``image_rows`` [Ni]: rows whose content attention reads the image level;
    ``token_groups``: rows whose content attention reads token rows;
    ``cross_rows`` [Nc]: image rows then the token groups' rows (the rows content attention
    updates, in that order);
    ``self_groups``: condition attention (their rows also get the FFN);
    ``self_rows`` [Ns]: their rows in group order (None = every row, in sequence order);
    ``self_keys`` [Nk]: the rows they read as keys, sorted (None = every row);
    ``self_key_pos``: per group, its ``cols`` as positions in ``self_keys`` (a slice where they
    are consecutive)."""

    image_rows: torch.Tensor
    token_groups: List[RowGroup]
    cross_rows: torch.Tensor
    self_groups: List[RowGroup]
    self_rows: Optional[torch.Tensor]
    self_keys: Optional[torch.Tensor]
    self_key_pos: List[object]


def layer_rows(
    n: int,
    *,
    image_rows: torch.Tensor,
    token_groups: List[RowGroup],
    self_groups: List[RowGroup],
    keep: Optional[torch.Tensor],
) -> LayerRows:
    """The :class:`LayerRows` of a layer whose new content is read only at the rows ``keep``
    [N] bool (None = all N rows). Condition attention and FFN run for the kept rows; content
    attention runs for the kept rows and for the rows the kept rows read as condition-attention
    keys (their updated content is read within the layer)."""
    device = image_rows.device
    if keep is not None and bool(keep.all()):
        keep = None
    if keep is None:
        sg = self_groups
    else:
        sg = [g for g in (g.select(keep) for g in self_groups) if g is not None]
    self_rows = torch.cat([g.rows for g in sg]) if sg else image_rows[:0]
    keys = torch.cat([g.cols for g in sg]).unique() if sg else image_rows[:0]  # sorted
    everything = torch.arange(n, device=device)
    if len(self_rows) == n and bool((self_rows == everything).all()):
        self_rows = None
    if len(keys) == n:
        keys = None
    if keep is None:
        tg, img = token_groups, image_rows
    else:
        cross_keep = keep.clone()
        cross_keep[everything if keys is None else keys] = True
        tg = [g for g in (g.select(cross_keep) for g in token_groups) if g is not None]
        img = image_rows[cross_keep[image_rows]]
    cross_rows = torch.cat([img] + [g.rows for g in tg])
    key_pos = [_positions(g.cols, keys) for g in sg]
    return LayerRows(img, tg, cross_rows, sg, self_rows, keys, key_pos)


def _positions(cols: torch.Tensor, keys: Optional[torch.Tensor]):
    """Positions of ``cols`` in the sorted ``keys`` (None = 0..N-1): a slice when consecutive."""
    pos = cols if keys is None else torch.searchsorted(keys, cols)
    if len(pos) and bool((pos[1:] - pos[:-1] == 1).all()):
        return slice(int(pos[0]), int(pos[-1]) + 1)
    return pos
