"""Conventions shared by every FIND module: boolean polarity and index sentinels.

Boolean tensors carry their polarity in their name; a bare ``*_mask`` never means "padding":

* ``*_padding``: True where the row/token is padding (absent). E.g. ``token_padding`` [B, T],
  ``item_padding`` [B, n], the sampler's ``padding`` [B, P].
* ``*_valid``: True where the row/token is real. E.g. ``token_valid`` of the language encoder
  (the Hugging Face ``attention_mask``), ``caption_valid`` of the retrieval targets.
* ``*_allowed``: True where attention is allowed (the SDPA convention of the block masks);
  ``*_blocked``: True where it is forbidden (``attn_blocked`` of the heads).
* Image masks (``masks``, ``pos_masks``, ``prev_mask`` ...) are segmentation masks or logits,
  never padding indicators.

Item indexes (which phrase / prompt / entity a token, point or per-item query belongs to) are
int64 ids ``>= 0``. :data:`NO_ITEM` (-1) marks "belongs to no item" and padding, in every index
tensor: ``query_index``, ``token_index``, ``token_entity`` and the sampler's point ``index``. Any
negative value is read as :data:`NO_ITEM`, so the official value -4 of ``token_entity``
("token outside every entity") is accepted as it is.
"""

import torch

__all__ = ["NO_ITEM", "no_item"]

#: Item id of padding rows and of tokens / points that belong to no item.
NO_ITEM = -1


def no_item(index: torch.Tensor) -> torch.Tensor:
    """True where ``index`` names no item (any negative id)."""
    return index < 0
