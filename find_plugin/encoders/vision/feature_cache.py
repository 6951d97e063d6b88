"""Content-addressed cache of a frozen module's per-image outputs (e.g. the frozen backbone).

FIND trains only the interface (and, for EfficientNet-Lite0, the pixel decoder): the frozen
backbone maps the same pixels to the same features every epoch. Where the augmentation repeats
pixels (no random scale: a fixed resize + pad and a random flip give two versions per image), the
features of an image are looked up by a hash of its input tensor instead of recomputed.

Exactness: a frozen module in eval mode treats the images of a batch independently, so a
cached row equals the row of a full-batch pass up to floating-point rounding (the missing images
are computed as one smaller batch). The key covers the input's bytes, shape and dtype, so any
change of pixels, size or normalisation is a miss, never a stale hit.
"""

import collections
import hashlib
from typing import Callable, Dict

import torch

__all__ = ["FeatureCache"]


class FeatureCache:
    """LRU cache ``hash(image) -> {name: [C, h, w] tensor}`` of at most ``max_items`` images.

    ``cache(module, images)`` with ``images`` [B, C, H, W] returns ``module(images)`` (a dict of
    [B, ...] tensors), computing only the rows not cached. ``hits`` / ``misses`` count images."""

    def __init__(self, max_items: int):
        if int(max_items) <= 0:
            raise ValueError(f"FeatureCache: max_items must be > 0, got {max_items}")
        self.max_items = int(max_items)
        self._store: "collections.OrderedDict[bytes, Dict[str, torch.Tensor]]" = (
            collections.OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().to("cpu").contiguous()
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{tuple(data.shape)}/{data.dtype}".encode())
        h.update(data.numpy().tobytes())
        return h.digest()

    @torch.no_grad()
    def __call__(
        self, module: Callable[[torch.Tensor], Dict[str, torch.Tensor]], images: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        if images.dim() != 4:
            raise ValueError(f"FeatureCache: images must be [B, C, H, W], got {images.shape}")
        keys = [self.key(img) for img in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        fresh = {}
        if missing:
            out = module(images[missing])
            if not isinstance(out, dict):
                raise TypeError(f"FeatureCache: the module must return a dict, got {type(out)}")
            for j, i in enumerate(missing):
                fresh[keys[i]] = {n: v[j].detach().clone() for n, v in out.items()}
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [fresh.get(k) or self._store[k] for k in keys]
        for k in keys:  # refresh recency; store the new rows; evict the oldest
            if k in fresh:
                self._store[k] = fresh[k]
            self._store.move_to_end(k)
        while len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return {n: torch.stack([r[n] for r in rows]) for n in rows[0]}
