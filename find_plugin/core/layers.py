"""Building blocks of the FIND interface: masked attention, FFN, sine encoding, the layer.

Attention uses ``torch.nn.functional.scaled_dot_product_attention``. Boolean masks here mean
True = the key MAY be attended (the SDPA convention); they reach SDPA as finite additive masks.
A row with no allowed key gets a zero attention output before the output projection (the official
code applies ``nan_to_num`` to the softmax, so such rows also output just the projection bias);
no NaN is ever produced.

Re-implements (facts from the papers and code, no code copied):
- DETR: Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020
  (github.com/facebookresearch/detr).
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_enabled() -> bool:
    """Whether an autocast region (CUDA or CPU) is active."""
    return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


class KeyValueBuffers:
    """Storage for the projected image keys and values [B, Nk, C] of the layers of one pass
    without autograd: each layer writes over the previous layer's (dead once its attention is
    done); the storage grows to the largest level's size and the smaller levels use its front.

    Why: on CPU each fresh multi-megabyte tensor is new pages for the kernel to fault in (glibc
    hands large blocks back to the system when they are freed); the image keys and values are
    the largest tensors of an interface pass (2 x 13 MB per layer at 80 x 80), and writing them
    into one storage instead of new tensors per layer saves most of the pass's page faults."""

    def __init__(self):
        self._storage: Optional[torch.Tensor] = None

    def take(self, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Two tensors shaped like ``like`` [B, Nk, C] (same dtype and device), not overlapping;
        their contents are undefined."""
        n = like.numel()
        s = self._storage
        if s is None or s.numel() < 2 * n or (s.dtype, s.device) != (like.dtype, like.device):
            self._storage = s = like.new_empty(2 * n)
        return s[:n].view(like.shape), s[n : 2 * n].view(like.shape)


class MaskedAttention(nn.Module):
    """Multi-head attention with packed in-projection (parameter names of nn.MultiheadAttention).

    Shapes: query [B, Nq, C], key/value [B, Nk, C], allowed [B, Nq, Nk] bool -> [B, Nq, C].
    ``offset`` [C] (optional): a vector added to every key and value row, applied after their
    projection (``(x + o) W = x W + o W``: no input gradient for the large ``key``/``value``
    when only ``offset`` needs one). The steps are also callable apart (:meth:`project_query`,
    :meth:`project_keys_values`, :meth:`attend`, ``out_proj``), so that a layer can project the
    queries of several groups of rows at once and attend each group over its own keys.
    """

    def __init__(self, *, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        allowed: torch.Tensor,
        *,
        offset: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        k, v = self.project_keys_values(key, value, offset=offset)
        return self.out_proj(self.attend(self.project_query(query), k, v, allowed))

    def project_query(self, query: torch.Tensor) -> torch.Tensor:
        """[B, Nq, C] -> projected and split [B, h, Nq, C/h]."""
        d = self.dim
        return self._split(F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d]))

    def project_keys_values(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        offset: Optional[torch.Tensor] = None,
        out: Optional[KeyValueBuffers] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """key / value [B, Nk, C] (+ ``offset``) -> projected keys and values [B, Nk, C];
        written into ``out`` (see :class:`KeyValueBuffers`) when given and neither autograd nor
        autocast is on."""
        _, w_k, w_v = self.in_proj_weight.chunk(3)
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        if offset is not None:  # the projected offset joins the bias (one GEMM with bias)
            b_k, b_v = F.linear(offset, w_k, b_k), F.linear(offset, w_v, b_v)
        if out is None or torch.is_grad_enabled() or _autocast_enabled():
            # (autocast picks the products' dtype itself: no buffer of a fixed dtype)
            return F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        k, v = out.take(key)
        torch.addmm(b_k, key.flatten(0, 1), w_k.t(), out=k.flatten(0, 1))
        torch.addmm(b_v, value.flatten(0, 1), w_v.t(), out=v.flatten(0, 1))
        return k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """Projected q [B, h, Nq, d] (split), k / v [B, Nk, C] -> [B, Nq, C] before the output
        projection; 0 on rows with no allowed key (and everywhere when Nk = 0)."""
        if k.shape[1] == 0:
            return q.new_zeros(q.shape[0], q.shape[2], self.dim)
        k, v = self._split(k), self._split(v)
        has_key = allowed.any(-1)  # [B, Nq]
        # Fully masked rows would give NaN in SDPA: let them attend everything, then zero them.
        safe = allowed | ~has_key[..., None]
        # A finite additive mask, not a boolean one: the blocked CPU kernel of torch 2.3 returns
        # NaN for a row whose first key block is fully masked (exp(-inf - -inf)).
        neg = torch.finfo(q.dtype).min / 2
        bias = torch.zeros(safe.shape, dtype=q.dtype, device=q.device).masked_fill_(~safe, neg)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])
        out = out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.dim)
        return out * has_key[..., None].to(out.dtype)


class FFN(nn.Module):
    """Post-norm feed-forward block: norm(x + linear2(relu(linear1(x))))."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (``layers.{i}`` parameter names)."""

    def __init__(self, *, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _sine_rows_and_columns(
    h: int, w: int, num_pos_feats: int, temperature: float, device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two halves of :func:`sine_position_encoding`: per row [h, F] and per column [w, F]."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def enc(v):
        v = v[:, None] / dim_t
        return torch.stack((v[:, 0::2].sin(), v[:, 1::2].cos()), dim=2).flatten(1)

    return enc(y), enc(x)


def sine_position_encoding(
    feature: torch.Tensor, *, num_pos_feats: int, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR-style 2-D sine encoding with normalize=True (scale 2*pi), no padding mask.

    feature [B, C, h, w] (only its shape/device are used) -> [B, 2*num_pos_feats, h, w]
    (y features first, then x).
    """
    b, _, h, w = feature.shape
    pos_y, pos_x = _sine_rows_and_columns(h, w, num_pos_feats, temperature, feature.device)
    pos_y = pos_y[:, None, :].expand(h, w, num_pos_feats)
    pos_x = pos_x[None, :, :].expand(h, w, num_pos_feats)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return pos[None].expand(b, -1, -1, -1).to(feature.dtype)


def add_sine_position_encoding(feature: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """``feature + sine_position_encoding(feature, num_pos_feats=C // 2)`` for feature [B, C, h, w]
    (C even), the same values: the y half of the channels gets its per-row encoding, the x half
    its per-column one, broadcast (the [C, h, w] encoding is never made, and the sum keeps the
    feature's layout)."""
    c, h, w = feature.shape[1:]
    if c % 2:
        raise ValueError(
            f"add_sine_position_encoding: feature needs an even channel count, got {c}"
        )
    half = c // 2
    pos_y, pos_x = _sine_rows_and_columns(h, w, half, temperature, feature.device)
    pos_y = pos_y.t().to(feature.dtype)[None, :, :, None]  # [1, F, h, 1]
    pos_x = pos_x.t().to(feature.dtype)[None, :, None, :]  # [1, F, 1, w]
    if torch.is_grad_enabled() and feature.requires_grad:
        return torch.cat((feature[:, :half] + pos_y, feature[:, half:] + pos_x), dim=1)
    out = torch.empty_like(feature)
    torch.add(feature[:, :half], pos_y, out=out[:, :half])
    torch.add(feature[:, half:], pos_x, out=out[:, half:])
    return out


class InterfaceLayer(nn.Module):
    """One interface layer: content attention (cross) -> condition attention (self) -> FFN,
    post-norm, dropout 0 (parameter names ``cross_attn``, ``cross_norm``, ``self_attn``,
    ``self_norm``, ``ffn``).

    Each attention runs over the blocks of its mask (:class:`~find_plugin.core.attention_mask.
    LayerRows`): the image rows over the image keys, every token group over its own token rows,
    every condition-attention group over its own key rows. Keys outside a row's block are
    blocked for it, so this is the attention over all keys with the full masks (blocked keys
    have exactly zero weight), without the work on blocked pairs.
    """

    def __init__(self, *, dim: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.cross_attn = MaskedAttention(dim=dim, num_heads=num_heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = MaskedAttention(dim=dim, num_heads=num_heads)
        self.self_norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim=dim, hidden=dim_feedforward)

    def forward(
        self,
        content: torch.Tensor,
        pos: torch.Tensor,
        image: torch.Tensor,
        image_keys: torch.Tensor,
        *,
        rows,
        image_allowed: torch.Tensor,
        image_offset: Optional[torch.Tensor] = None,
        image_kv: Optional[KeyValueBuffers] = None,
    ) -> torch.Tensor:
        """content / pos [B, N, C] (the combined sequence); image [B, hw, C] (this layer's level)
        and image_keys [B, hw, C] (image + its positional encoding); ``rows``
        (:class:`~find_plugin.core.attention_mask.LayerRows`): which rows each step computes;
        image_allowed [B, Ni, hw] bool: the image part of the content-attention mask of
        ``rows.image_rows``; image_offset [C] (optional): a vector the image keys and values
        leave out, added after their projection (the level embedding,
        :mod:`~find_plugin.core.feature_levels`); image_kv (optional): where to write the image
        keys and values without autograd (:class:`KeyValueBuffers`).
        Returns the new content [B, N, C] (rows outside ``rows`` keep their content)."""
        # content attention: the image rows over the image, each token group over its tokens
        ca = self.cross_attn
        q = content + pos
        qc = ca.project_query(q[:, rows.cross_rows])
        parts, start = [], len(rows.image_rows)
        if start:
            k, v = ca.project_keys_values(image_keys, image, offset=image_offset, out=image_kv)
            parts.append(ca.attend(qc[:, :, :start], k, v, image_allowed))
        for g in rows.token_groups:
            k, v = ca.project_keys_values(q[:, g.cols], content[:, g.cols])
            end = start + len(g.rows)
            parts.append(ca.attend(qc[:, :, start:end], k, v, g.allowed))
            start = end
        if parts:
            attended = ca.out_proj(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
            updated = self.cross_norm(content[:, rows.cross_rows] + attended)
            content = content.index_copy(1, rows.cross_rows, updated)
        # condition attention + FFN of the rows whose new content is read
        if not rows.self_groups:
            return content
        sa = self.self_attn
        q = content + pos
        x = _take(content, rows.self_rows)
        qs = sa.project_query(_take(q, rows.self_rows))
        k, v = sa.project_keys_values(_take(q, rows.self_keys), _take(content, rows.self_keys))
        parts, start = [], 0
        for g, at in zip(rows.self_groups, rows.self_key_pos):
            end = start + len(g.rows)
            parts.append(sa.attend(qs[:, :, start:end], k[:, at], v[:, at], g.allowed))
            start = end
        attended = sa.out_proj(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
        x = self.ffn(self.self_norm(x + attended))
        return x if rows.self_rows is None else content.index_copy(1, rows.self_rows, x)


def _take(x: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
    """The sequence rows ``rows`` of x [B, N, C] (None = all, without a copy)."""
    return x if rows is None else x[:, rows]
