"""The combined sequence of one forward pass: layout of the built variables and attention plan.

:func:`build_sequence` concatenates the variables (in prototype order) into content / pos
[B, N, C] and turns the prototypes' rules into the masks every layer uses
(:mod:`find_plugin.core.attention_mask`): the static condition-attention mask, the static token
part of the content-attention mask, and what the per-layer image part needs (row modes, the
memories' ``prev_mask``). It also holds the per-level content of the variables that are reset at
every layer (visual-prompt tokens).
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import attention_mask as am
from .conventions import NO_ITEM
from .prototypes import VariableSpec
from .variables import VariableRows


@dataclass
class SequencePlan:
    """Everything the layer loop needs besides the parameters (N rows, Nc of them with a
    content-attention rule, Nk of them read as token keys)."""

    layout: am.SequenceLayout
    content: torch.Tensor  # [B, N, C] initial content
    pos: torch.Tensor  # [B, N, C] positional embeddings
    self_groups: List[am.RowGroup]  # blocks of the condition attention (it runs over them only)
    token_groups: List[am.RowGroup]  # blocks of the token part of the content attention
    image_rows: torch.Tensor  # [Ni] long, the rows whose content attention reads the image
    modes: torch.Tensor  # [N] long, how each row reads the image (attention_mask.MODE_*)
    reset_rows: Optional[torch.Tensor]  # [N] bool rows replaced at every layer, None if none
    reset_content: Optional[List[torch.Tensor]]  # per level [B, N, C]
    memory_rows: Optional[torch.Tensor]  # [M] long
    memory_blocked: Optional[List[torch.Tensor]]  # per level [B, 1 or M, hw] bool

    def reset(self, content: torch.Tensor, pos: torch.Tensor, level: int):
        """Replace the reset rows by this level's content (pos = its detached copy)."""
        if self.reset_rows is None:
            return content, pos
        lv, rows = self.reset_content[level], self.reset_rows[None, :, None]
        return torch.where(rows, lv, content), torch.where(rows, lv.detach(), pos)

    def layer_rows(self, keep: Optional[torch.Tensor] = None) -> am.LayerRows:
        """What a layer computes when its new content is read at the rows ``keep`` [N] bool
        only (None: every row that is not reset at the next layer)."""
        if keep is None and self.reset_rows is not None:
            keep = ~self.reset_rows
        return am.layer_rows(
            self.layout.length,
            image_rows=self.image_rows,
            token_groups=self.token_groups,
            self_groups=self.self_groups,
            keep=keep,
        )

    def image_allowed(
        self,
        level: int,
        hw: int,
        mask_rows: torch.Tensor,
        mask_blocked: Optional[torch.Tensor],
        rows: am.LayerRows,
    ) -> torch.Tensor:
        """[B, Ni, hw] image part of the content-attention mask of a layer reading ``level`` (hw
        keys), for ``rows.image_rows``; ``mask_blocked`` [B, M, hw]: previous-layer masks of the
        sequence rows ``mask_rows``."""
        return am.image_allowed(
            self.modes,
            hw,
            batch=self.content.shape[0],
            mask_rows=mask_rows,
            mask_blocked=mask_blocked,
            memory_rows=self.memory_rows,
            memory_blocked=None if self.memory_blocked is None else self.memory_blocked[level],
            rows=rows.image_rows,
        )


def build_layout(
    specs: Sequence[VariableSpec], built: Mapping[str, VariableRows]
) -> Tuple[am.SequenceLayout, torch.Tensor, torch.Tensor]:
    """Concatenate the variables: (layout, content [B, N, C], pos [B, N, C])."""
    slices, start = {}, 0
    for s in specs:
        n = built[s.name].content.shape[1]
        slices[s.name] = (start, start + n)
        start += n
    rows = [built[s.name] for s in specs]
    content = torch.cat([r.content for r in rows], 1)
    pos = torch.cat([r.pos for r in rows], 1)
    padding = torch.cat([r.padding for r in rows], 1)
    index = torch.cat(
        [
            (
                r.index
                if r.index is not None
                else torch.full_like(r.padding, NO_ITEM, dtype=torch.long)
            )
            for r in rows
        ],
        1,
    )
    has_index = {s.name: built[s.name].index is not None for s in specs}
    return am.SequenceLayout(list(specs), slices, padding, index, has_index), content, pos


def sample_swaps(
    specs: Sequence[VariableSpec], training: bool, generator: Optional[torch.Generator]
) -> Dict[str, Dict[str, str]]:
    """Training-time condition-attention swaps (official DYNAMICS), one draw per rule."""
    swaps: Dict[str, Dict[str, str]] = {}
    if not training:
        return swaps
    for s in specs:
        for src, dst, p in s.train_swaps:
            if torch.rand((), generator=generator).item() < p:
                swaps.setdefault(s.name, {})[src] = dst
    return swaps


def memory_blocked(
    prev_mask: torch.Tensor,
    *,
    batch: int,
    num_memories: int,
    sizes: Sequence[Tuple[int, int]],
    where: str,
) -> List[torch.Tensor]:
    """``prev_mask`` [B, 1 or M, H, W] logits -> per level [B, 1 or M, h*w] bool, True where the
    memories may not look (sigmoid < 0.5 after a bilinear resize to the level)."""
    if (
        prev_mask.dim() != 4
        or prev_mask.shape[0] != batch
        or prev_mask.shape[1]
        not in (
            1,
            num_memories,
        )
    ):
        raise ValueError(
            f"{where}['prev_mask'] must be [B={batch}, 1 or {num_memories}, h, w] mask logits "
            f"(one per memory or one shared), got {tuple(prev_mask.shape)}"
        )
    return [
        (F.interpolate(prev_mask, size=sz, mode="bilinear", align_corners=False).sigmoid() < 0.5)
        .flatten(2)
        .detach()
        for sz in sizes
    ]


def build_sequence(
    specs: Sequence[VariableSpec],
    built: Mapping[str, VariableRows],
    *,
    num_levels: int,
    swaps: Dict[str, Dict[str, str]],
    memory_prev_mask: Optional[Tuple[torch.Tensor, str]],
    sizes: Sequence[Tuple[int, int]],
) -> SequencePlan:
    """Layout + attention plan of the built variables. ``memory_prev_mask``: (prev_mask, name of
    the task input, for errors) of the variable with ``memory_prev_mask`` attention, if present."""
    layout, content, pos = build_layout(specs, built)
    self_allowed = am.self_attention_allowed(layout, swaps)
    token_allowed = am.token_cross_allowed(layout)
    modes = am.image_modes(layout)

    memory_rows, blocked = None, None
    memory = next((s for s in specs if s.cross and s.cross.mode == "memory_prev_mask"), None)
    if memory is not None and memory_prev_mask is not None:
        memory_rows = layout.rows(memory.name)
        prev, where = memory_prev_mask
        blocked = memory_blocked(
            prev.to(content.dtype),
            batch=content.shape[0],
            num_memories=len(memory_rows),
            sizes=sizes,
            where=where,
        )

    reset_rows = torch.zeros(layout.length, dtype=torch.bool, device=content.device)
    per_level: List[List[torch.Tensor]] = [[] for _ in range(num_levels)]
    for s in specs:
        v = built[s.name]
        for lvl in range(num_levels):
            per_level[lvl].append(v.levels[lvl] if v.levels else v.content)
        if v.levels:
            reset_rows[slice(*layout.slices[s.name])] = True
    has_reset = bool(reset_rows.any())
    return SequencePlan(
        layout=layout,
        content=content,
        pos=pos,
        self_groups=am.row_groups(layout, am.self_attention_keys(layout, swaps), self_allowed),
        token_groups=am.row_groups(layout, am.token_attention_keys(layout), token_allowed),
        image_rows=torch.nonzero(modes != am.MODE_NONE).flatten(),
        modes=modes,
        reset_rows=reset_rows if has_reset else None,
        reset_content=[torch.cat(x, 1) for x in per_level] if has_reset else None,
        memory_rows=memory_rows,
        memory_blocked=blocked,
    )
