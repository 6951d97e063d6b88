"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for the frozen pixel decoder (CPU).

A 3x3 convolution (stride 1, padding 1) computes each 2x2 output tile from a 4x4 input tile.
Winograd's transform (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR
2016) turns that into 16 element-wise products of transformed tiles instead of 36 multiply-adds:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

with ``B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]``, ``G = [[1,0,0],[1/2,1/2,1/2],
[1/2,-1/2,1/2],[0,0,1]]`` and ``A^T = [[1,1,1,0],[0,1,-1,-1]]``. Summed over input channels,
each of the 16 products is a matrix product [out, in] x [in, tiles]: 16/36 = 4/9 of the direct
convolution's multiply-adds, which on a CPU are the whole cost of the pixel decoder's two
512-channel convolutions at stride 4 (~120 GFLOP each for a 640x640 image). The transforms are
additions and halvings only; the results equal the direct convolution up to float rounding
(a few 1e-6 relative). The tiles are processed in bands of rows (each padded on its own), so the
transformed tiles of one band (16 x in x band tiles) are all the extra memory.

:func:`conv3x3` uses it where it pays and is exact to float rounding: CPU, float32, no autograd,
at least :data:`MIN_CHANNELS` channels in and out, even height and width; otherwise
``F.conv2d``.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F

__all__ = ["MIN_CHANNELS", "conv3x3", "winograd_conv3x3"]

# Below this width the direct convolution is as fast (the products are too small to gain).
MIN_CHANNELS = 128
# Tiles per matrix product (columns of the [in, tiles] operand): a band of tile rows of about
# this size keeps the transformed band in cache-friendly pieces.
BAND_TILES = 1024


def _transform_weight(weight: torch.Tensor) -> List[torch.Tensor]:
    """[O, C, 3, 3] -> the 16 matrices [O, C] of ``G g G^T`` (row-major over the 4x4 tile)."""
    rows = weight.unbind(2)  # 3 x [O, C, 3]
    rows = [
        rows[0],
        (rows[0] + rows[1] + rows[2]) * 0.5,
        (rows[0] - rows[1] + rows[2]) * 0.5,
        rows[2],
    ]
    out = []
    for r in rows:
        a0, a1, a2 = r.unbind(-1)
        out += [a0, (a0 + a1 + a2) * 0.5, (a0 - a1 + a2) * 0.5, a2]
    return out


def _transform_input(d: List[torch.Tensor], out: torch.Tensor) -> None:
    """One direction of ``B^T d B``: four strided slices -> ``out[0..3]``."""
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])


def winograd_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for x [B, C, H, W] with even H and W and
    weight [O, C, 3, 3], by F(2x2, 3x3) (module docstring)."""
    b, c, h, w = x.shape
    o = weight.shape[0]
    if h % 2 or w % 2 or weight.shape[1:] != (c, 3, 3):
        raise ValueError(
            f"winograd_conv3x3: needs even H, W and a [O, {c}, 3, 3] weight, got x "
            f"{tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    th, tw = h // 2, w // 2
    u = torch.stack(_transform_weight(weight))[:, None]  # [16, 1, O, C]
    out = x.new_empty(b, o, h, w)
    band = max(1, BAND_TILES // tw)
    bufs = {}
    for s in range(0, th, band):
        n = min(th, s + band) - s
        if n not in bufs:  # one set of buffers per band height (at most two)
            bufs[n] = (
                x.new_empty(4, b, c, n, w + 2),  # rows transformed
                x.new_empty(16, b, c, n, tw),  # tiles transformed, row-major over the 4x4 tile
                x.new_empty(16, b, o, n * tw),  # the 16 products
                x.new_empty(2, 4, b, o, n * tw),  # A^T over the tile rows
            )
        rows, tiles, prod, half = bufs[n]
        # the band's 2n + 2 input rows (2s - 1 .. 2(s + n)), zero-padded where outside the map
        r0, r1 = 2 * s - 1, 2 * (s + n) + 1
        top, bottom = max(r0, 0), min(r1, h)
        seg = F.pad(x[:, :, top:bottom], (1, 1, top - r0, r1 - bottom))
        _transform_input([seg[:, :, k : k + 2 * n : 2] for k in range(4)], rows)
        for i in range(4):
            _transform_input([rows[i][..., k : k + 2 * tw : 2] for k in range(4)], tiles[4 * i :])
        torch.matmul(u, tiles.view(16, b, c, n * tw), out=prod)
        m = prod.view(4, 4, b, o, n * tw)  # [tile row, tile column, ...]
        torch.add(m[0], m[1], out=half[0]).add_(m[2])
        torch.sub(m[1], m[2], out=half[1]).sub_(m[3])
        for i in range(2):  # A^T over the tile columns, written to the output's 2x2 phases
            r = half[i]
            phase = out[:, :, 2 * s + i : 2 * (s + n) : 2]
            phase[..., 0::2] = (r[0] + r[1] + r[2]).view(b, o, n, tw)
            phase[..., 1::2] = (r[1] - r[2] - r[3]).view(b, o, n, tw)
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


def conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` (stride 1, no dilation, one group), through
    :func:`winograd_conv3x3` where it pays (module docstring)."""
    fast = (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 4
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and min(weight.shape[0], weight.shape[1]) >= MIN_CHANNELS
        and not (
            torch.is_grad_enabled()
            and (
                x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
            )
        )
    )
    if fast:
        return winograd_conv3x3(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=1)
