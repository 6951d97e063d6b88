"""Text-only passes of the interface on all-zero image features.

Some outputs never read the image: the class query (class-embedding bank, spec §2.1), the caption
query (retrieval text side) and the legend query of a text-only interleave sentence (interleave
retrieval query side). The official code computes them by running the interface on zero features
of a fixed size, one text per pass; every text is independent of the others, so batching them
gives the same rows.
"""

from typing import Dict, Mapping

import torch
from torch import nn

__all__ = [
    "ZERO_FEATURE_SIZES",
    "ZERO_MASK_FEATURE_SIZE",
    "zero_feature_pass",
    "zero_feature_sizes",
]

# Official size of the zero features: levels 20/40/80 (strides 32/16/8 of a 640 image), mask
# features 160 (stride 4). An interface with ``zero_feature_size`` = s uses the maps of an s x s
# image instead (a smaller model trained at a smaller size need not pay for 640).
ZERO_FEATURE_SIZES = ((20, 20), (40, 40), (80, 80))
ZERO_MASK_FEATURE_SIZE = (160, 160)


def zero_feature_sizes(image_size: int = 640):
    """(level sizes at strides 32/16/8, mask-feature size at stride 4) of an ``image_size``
    square image; 640 gives the official ``ZERO_FEATURE_SIZES`` / ``ZERO_MASK_FEATURE_SIZE``."""
    if image_size < 32 or image_size % 32:
        raise ValueError(f"zero_feature_size must be a positive multiple of 32, got {image_size}")
    levels = tuple((image_size // s, image_size // s) for s in (32, 16, 8))
    return levels, (image_size // 4, image_size // 4)


@torch.no_grad()
def zero_feature_pass(
    interface: nn.Module,
    task: str,
    inputs: Mapping[str, torch.Tensor],
    output: str,
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Run ``task`` with batched ``inputs`` (every value [N, ...]: a tensor or a per-text list) on
    zero image features and return ``outputs[output][:, 0]`` [N, D] (the first row of a one-row
    query output), in eval mode (the interface's mode is restored)."""
    tensors = [v for v in inputs.values() if torch.is_tensor(v) and v.is_floating_point()]
    if not tensors:
        raise ValueError(f"zero_feature_pass({task!r}): inputs hold no float tensor (tokens)")
    sizes = {k: len(v) for k, v in inputs.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ValueError(f"zero_feature_pass({task!r}): inputs disagree on N: {sizes}")
    ref = tensors[0]
    dtype = ref.dtype
    in_channels = getattr(interface, "in_channels", None) or interface.hidden_dim
    mask_dim = interface.heads.mask_embed.layers[-1].out_features
    level_sizes, mask_size = zero_feature_sizes(getattr(interface, "zero_feature_size", 640))
    was_training = interface.training
    interface.eval()
    rows = []
    try:
        for s in range(0, n, batch_size):
            chunk: Dict[str, object] = {k: v[s : s + batch_size] for k, v in inputs.items()}
            b = min(batch_size, n - s)
            feats = [ref.new_zeros(b, in_channels, h, w, dtype=dtype) for h, w in level_sizes]
            mf = ref.new_zeros(b, mask_dim, *mask_size, dtype=dtype)
            rows.append(interface(feats, mf, {task: chunk}, aux_outputs=False)[output][:, 0])
    finally:
        interface.train(was_training)
    return torch.cat(rows)
