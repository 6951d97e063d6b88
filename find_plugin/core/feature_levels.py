"""Image side of the FIND interface: input projection, level embedding, positional encoding.

Official order (``prepare_vision_features`` of the FIND decoder), per level l:

1. ``proj_l = input_proj[l](x_l)``: a 1x1 convolution from the pixel decoder's channels to
   ``hidden_dim`` when they differ (or when the projection is enforced), otherwise the identity;
2. ``src_l = proj_l + level_embed[l]``: the image keys/values of the layers reading level l, and
   the map the visual-prompt sampler samples (after its own ``mask_sptial_embed[l]``);
3. ``pos_l = sine(x_l)``: the 2-D sine encoding, which depends only on the map's size, so taking it
   of the projected or of the raw map is the same.

Unless autograd has to reach the projected features (a trainable vision side), the layers'
keys/values are kept without the level embedding and get it after their projection:
``(proj + e) W = proj W + e W``, for the same values up to float rounding. In training (frozen
vision side) the big [hw, C] x [C, C] products then need no input gradient in the backward pass
(only the [C] level embedding does); in inference the values are the projected features
themselves (with an identity ``input_proj``, the pixel decoder's maps: no copy), and
``proj + e`` is made only if the visual-prompt sampler reads it (:attr:`FeatureLevels.maps`).
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import add_sine_position_encoding


def c2_xavier_fill(module: nn.Module) -> nn.Module:
    """Caffe2's "XavierFill" as detectron2 names it: kaiming-uniform weight with a = 1, zero bias
    (the official initialisation of ``input_proj``)."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def build_input_proj(
    *, in_channels: int, hidden_dim: int, num_levels: int, enforce: bool
) -> nn.ModuleList:
    """Per level a 1x1 ``nn.Conv2d(in_channels, hidden_dim)`` (state keys ``{l}.weight/bias``)
    when ``in_channels != hidden_dim`` or ``enforce``; otherwise ``nn.Identity`` (no keys)."""
    if in_channels != hidden_dim or enforce:
        return nn.ModuleList(
            c2_xavier_fill(nn.Conv2d(in_channels, hidden_dim, kernel_size=1))
            for _ in range(num_levels)
        )
    return nn.ModuleList(nn.Identity() for _ in range(num_levels))


@dataclass
class FeatureLevels:
    """The image features of every level, ready for the layers and the visual-prompt sampler.

    ``proj[l]`` [B, C, h_l, w_l]: the projected features; ``embeds[l]`` [C]: the level embedding;
    :attr:`maps` ``[l]`` [B, C, h_l, w_l]: their sum (sampled by the sampler; made on first use);
    ``src[l]`` [B, h_l*w_l, C]: the content-attention values, flattened: ``proj + e``, or
    ``proj`` alone when ``offsets[l]`` is set;
    ``keys[l]`` [B, h_l*w_l, C]: ``src`` + the sine positional encoding, the content-attention
    keys (added once per pass, shared by the layers reading level l; the encoding itself is not
    kept);
    ``sizes[l]`` (h_l, w_l);
    ``offsets[l]``: None, or the level embedding [C] that ``src[l]`` and ``keys[l]`` leave out
    (added after the key/value projections, see the module docstring).
    """

    proj: List[torch.Tensor]
    embeds: List[torch.Tensor]
    src: List[torch.Tensor]
    keys: List[torch.Tensor]
    sizes: List[Tuple[int, int]]
    offsets: List[Optional[torch.Tensor]]
    _maps: Optional[List[torch.Tensor]] = field(default=None, repr=False)

    @property
    def maps(self) -> List[torch.Tensor]:
        """Per level ``proj + level embedding`` [B, C, h_l, w_l] (made once, on first use)."""
        if self._maps is None:
            self._maps = [p + e[None, :, None, None] for p, e in zip(self.proj, self.embeds)]
        return self._maps

    @property
    def batch_size(self) -> int:
        return self.proj[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.proj[0].device


def check_features(
    features: Sequence[torch.Tensor],
    mask_features: torch.Tensor,
    *,
    num_levels: int,
    in_channels: int,
) -> int:
    """Validate the pixel-decoder outputs; returns the batch size."""
    if len(features) != num_levels:
        raise ValueError(f"features: expected {num_levels} levels, got {len(features)}")
    bsz = features[0].shape[0]
    for lvl, f in enumerate(features):
        if f.dim() != 4 or f.shape[:2] != (bsz, in_channels):
            raise ValueError(
                f"features[{lvl}] must be [B={bsz}, in_channels={in_channels}, h, w], "
                f"got {tuple(f.shape)}"
            )
    if mask_features.dim() != 4 or mask_features.shape[0] != bsz:
        raise ValueError(
            f"mask_features must be [B={bsz}, mask_dim, H/4, W/4], got {tuple(mask_features.shape)}"
        )
    return bsz


def prepare_levels(
    features: Sequence[torch.Tensor],
    *,
    input_proj: nn.ModuleList,
    level_embed: nn.Embedding,
) -> FeatureLevels:
    """features[l] [B, in_channels, h_l, w_l] -> :class:`FeatureLevels` (official order above)."""
    projs, embeds, src, keys, sizes, offsets, made = [], [], [], [], [], [], []
    for lvl, x in enumerate(features):
        proj = input_proj[lvl](x)
        embed = level_embed.weight[lvl]
        projs.append(proj)
        embeds.append(embed)
        # the level embedding after the projections unless autograd must reach proj (module doc)
        split = not (torch.is_grad_enabled() and proj.requires_grad)
        if split:
            values = proj
        else:
            values = proj + embed[None, :, None, None]
            made.append(values)
        src.append(values.flatten(2).transpose(1, 2))
        offsets.append(embed if split else None)
        keys.append(add_sine_position_encoding(values).flatten(2).transpose(1, 2))
        sizes.append(tuple(proj.shape[-2:]))
    maps = made if len(made) == len(projs) else None  # else made on first use
    return FeatureLevels(projs, embeds, src, keys, sizes, offsets, maps)


# channels per group in :func:`downsample_bilinear`
DOWNSAMPLE_CHANNELS = 128


def downsample_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` of x [B, C, H, W].

    When H and W are even multiples of the output size (the stride-4 mask features brought to
    the stride-8/16/32 levels), each output pixel lies halfway between the middle two pixels of
    its f x f block in both directions, so bilinear interpolation is the mean of those 4 pixels
    (weights 1/4, powers of two: exact in floating point): four strided reads instead of a
    resize, which on CPU first copies a many-channel NCHW map into channels-last. Other sizes
    go to ``F.interpolate``."""
    h, w = x.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    fh, fw = h // oh, w // ow
    if (h, w) == (oh, ow):
        return x
    if fh * oh != h or fw * ow != w or fh % 2 or fw % 2:
        return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    r0, c0 = fh // 2 - 1, fw // 2 - 1

    # rows first (two whole-row reads per output row), then column pairs of the half-size sum:
    # twice as fast as four pixel-strided reads; by groups of channels, so that the row sums
    # (twice the output's size) never exist for all channels at once
    def half_sums(part: torch.Tensor, row_sums: Optional[torch.Tensor] = None) -> torch.Tensor:
        rows = part.unflatten(-2, (oh, fh))[..., r0 : r0 + 2, :]  # [..., oh, 2, W]
        row_sums = torch.add(rows[..., 0, :], rows[..., 1, :], out=row_sums)
        return row_sums.unflatten(-1, (ow, fw))[..., c0 : c0 + 2]

    if torch.is_grad_enabled() and x.requires_grad:  # autograd: plain ops on all channels
        pairs = half_sums(x)
        return (pairs[..., 0] + pairs[..., 1]) * 0.25
    out = x.new_empty(*x.shape[:-2], oh, ow)
    # one row-sum buffer for all groups (a fresh one per group costs its page faults each time)
    group = min(DOWNSAMPLE_CHANNELS, x.shape[-3])
    row_sums = x.new_empty(*x.shape[:-3], group, oh, w)
    for c in range(0, x.shape[-3], group):
        part = x[..., c : c + group, :, :]
        pairs = half_sums(part, row_sums[..., : part.shape[-3], :, :])
        torch.add(pairs[..., 0], pairs[..., 1], out=out[..., c : c + group, :, :])
    return out.mul_(0.25)
