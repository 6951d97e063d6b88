"""Token -> entity map of an interleave sentence (official convention, spec §1.3).

A token belongs to entity k iff the entity's character span [start, end) contains the token's
offset span (from the tokenizer's ``return_offsets_mapping``). Tokens that belong to no entity get
:data:`~find_plugin.core.conventions.NO_ITEM` (-1); any negative id reads as "no entity", so the
official padding value -4 of ``decode_entity_mask_to_indices`` is accepted as input. Tokens with
an empty offset span (special tokens such as BOS, offsets (0, 0)) belong to no entity.
"""

from typing import Sequence, Tuple

import torch

from .conventions import NO_ITEM


def token_entity_map(
    offsets: Sequence[Tuple[int, int]], entity_spans: Sequence[Tuple[int, int]]
) -> torch.Tensor:
    """offsets: per token (start, end) character offsets; entity_spans: per entity (start, end).

    Returns [T] long: entity id of every token, NO_ITEM when none. If spans overlap, the first
    entity wins."""
    off = torch.as_tensor(list(offsets), dtype=torch.long).reshape(-1, 2)
    spans = torch.as_tensor(list(entity_spans), dtype=torch.long).reshape(-1, 2)
    if (spans[:, 1] < spans[:, 0]).any():
        raise ValueError(f"entity_spans must be (start, end) with end >= start, got {spans}")
    inside = (spans[None, :, 0] <= off[:, None, 0]) & (off[:, None, 1] <= spans[None, :, 1])
    inside &= (off[:, 1] > off[:, 0])[:, None]
    first = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(off[:, 0], -1))
    return torch.where(first >= 0, first, torch.full_like(first, NO_ITEM))


def entity_token_masks(token_entity: torch.Tensor, num_entities: int) -> torch.Tensor:
    """[T] entity ids (any negative = none) -> [E, T] bool membership (the official
    ``entity_to_tokens``)."""
    return token_entity[None, :] == torch.arange(num_entities, device=token_entity.device)[:, None]
