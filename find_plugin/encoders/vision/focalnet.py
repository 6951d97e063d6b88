"""FocalNet backbone (focal modulation networks) as used by X-Decoder / SEEM / FIND.

Two block styles exist in the FIND code base and both are implemented here:

* ``"focal_dw"`` (FocalNet-T in FIND): every block first adds a 3x3 depthwise conv (``dw1``)
  before the modulation branch and another one (``dw2``) before the MLP branch; the stem conv
  uses padding 3.
  Post-LN puts ``norm1`` after the modulation residual and ``norm2`` after the MLP residual.
* ``"focal"`` (FocalNet-L in FIND): no depthwise convs; the stem conv uses padding 2. Post-LN
  normalises the branch output *before* it is scaled by LayerScale and added to the residual.

Parameter and buffer names equal the official ones after stripping the ``backbone.`` prefix, so an
official checkpoint loads with a plain prefix mapping (see :mod:`.vision_model`).

Input: images ``[B, 3, H, W]`` (already normalised). Output: dict ``res2..res5`` of
``[B, C_i, H_i, W_i]`` with strides 4/8/16/32 and channels ``embed_dim * 2**i``.

Re-implements (facts from the papers and code, no code copied):
- FocalNet: Yang et al., "Focal Modulation Networks", NeurIPS 2022 (github.com/microsoft/FocalNet).
- X-Decoder: Zou et al., "Generalized Decoding for Pixel, Image, and Language", CVPR 2023
  (github.com/microsoft/X-Decoder).
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...presets import FOCALNET_VARIANTS
from .freezing import FrozenTrainMixin, freeze_

__all__ = ["FocalNet", "build_focalnet"]

STAGE_NAMES = ("res2", "res3", "res4", "res5")


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (identity in eval mode or with ``p == 0``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Two-layer GELU MLP applied on the channel (last) axis."""

    def __init__(self, *, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _gated_sum(
    total: Optional[torch.Tensor], context: torch.Tensor, gate: torch.Tensor
) -> torch.Tensor:
    """``total + context * gate`` (``context * gate`` when ``total`` is None), in place.

    In place because the sum lives in the contexts' channels-last layout: a product with the
    [B, C, 1, 1] global context alone comes out NCHW, and adding it to the channels-last sum is
    a slow mixed-layout pass. ``addcmul_`` does not need the sum's old value for its backward.
    Out of place when the product's dtype differs from the sum's (autocast may mix them)."""
    if total is None:
        return context * gate
    if torch.result_type(context, gate) != total.dtype:
        return total + context * gate
    return total.addcmul_(context, gate)


class FocalModulation(nn.Module):
    """Focal modulation: gated sum of hierarchical depthwise contexts modulating a query projection.

    ``f`` projects to ``[q (C), ctx (C), gates (L + 1)]``; level ``l`` applies a depthwise conv of
    kernel ``focal_window + 2 * l`` followed by GELU to the previous context; the last gate
    weights a global (mean-pooled) context. Input and output ``[B, H, W, C]``.
    """

    def __init__(
        self,
        *,
        dim: int,
        focal_level: int,
        focal_window: int,
        focal_factor: int = 2,
        proj_drop: float = 0.0,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
    ):
        super().__init__()
        self.focal_level = focal_level
        self.scaling_modulator = scaling_modulator
        self.use_postln_in_modulation = use_postln_in_modulation
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList()
        for level in range(focal_level):
            k = focal_factor * level + focal_window
            conv = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False)
            self.focal_layers.append(nn.Sequential(conv, nn.GELU()))
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        # channels-last views ([B, C, H, W] over NHWC memory): the depthwise convolutions and
        # the 1x1 ``h`` run in that layout, and the result needs no copy back to NHWC
        x = self.f(x).permute(0, 3, 1, 2)
        q, ctx, gates = torch.split(x, (c, c, self.focal_level + 1), dim=1)
        ctx_all = None
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = _gated_sum(ctx_all, ctx, gates[:, level : level + 1])
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = _gated_sum(ctx_all, ctx_global, gates[:, self.focal_level :])
        if self.scaling_modulator:
            # Keeps the modulator magnitude independent of the number of levels.
            ctx_all = ctx_all / (self.focal_level + 1)
        out = (q * self.h(ctx_all)).permute(0, 2, 3, 1).contiguous()
        if self.use_postln_in_modulation:
            out = self.ln(out)
        return self.proj_drop(self.proj(out))


class FocalModulationBlock(nn.Module):
    """One FocalNet block on tokens ``[B, H*W, C]`` (spatial size passed explicitly)."""

    def __init__(
        self,
        *,
        dim: int,
        focal_level: int,
        focal_window: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        depthwise: bool = True,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
    ):
        super().__init__()
        self.depthwise = depthwise
        self.use_postln = use_postln
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        else:
            self.gamma_1, self.gamma_2 = 1.0, 1.0
        if depthwise:
            self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim=dim,
            focal_level=focal_level,
            focal_window=focal_window,
            proj_drop=drop,
            use_postln_in_modulation=use_postln_in_modulation,
            scaling_modulator=scaling_modulator,
        )
        if depthwise:
            self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio), drop=drop)

    @staticmethod
    def _dw_residual(conv: nn.Module, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, h, w)
        return x + conv(grid).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        if n != h * w:
            raise ValueError(f"FocalModulationBlock: got {n} tokens, expected h*w = {h}*{w}")
        if self.depthwise:
            x = self._dw_residual(self.dw1, x, h, w)
        shortcut = x
        y = x if self.use_postln else self.norm1(x)
        y = self.modulation(y.view(b, h, w, c)).view(b, n, c)
        if self.depthwise:
            # focal_dw: post-LN normalises after the residual sum.
            x = shortcut + self.drop_path(self.gamma_1 * y)
            if self.use_postln:
                x = self.norm1(x)
            x = self._dw_residual(self.dw2, x, h, w)
            if self.use_postln:
                return self.norm2(x + self.drop_path(self.gamma_2 * self.mlp(x)))
            return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        # focal: post-LN normalises the branch output before LayerScale.
        if self.use_postln:
            y = self.norm1(y)
        x = shortcut + self.drop_path(self.gamma_1 * y)
        if self.use_postln:
            return x + self.drop_path(self.gamma_2 * self.norm2(self.mlp(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Strided conv embedding + LayerNorm on channels. ``[B, C_in, H, W] -> [B, C_out, H', W']``.

    The input is zero-padded bottom/right to a multiple of ``patch_size`` first.
    """

    def __init__(
        self,
        *,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        use_conv_embed: bool,
        is_stem: bool,
        stem_padding: int = 3,
        use_norm: bool = True,
    ):
        super().__init__()
        self.patch_size = patch_size
        if use_conv_embed:
            kernel, stride, pad = (7, 4, stem_padding) if is_stem else (3, 2, 1)
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride=stride, padding=pad)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if use_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        return x


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks then an optional 2x downsampling ``PatchEmbed``."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        drop_paths: Sequence[float],
        downsample: bool,
        use_conv_embed: bool,
        block_kwargs: dict,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                FocalModulationBlock(dim=dim, drop_path=drop_paths[i], **block_kwargs)
                for i in range(depth)
            ]
        )
        self.downsample = (
            PatchEmbed(
                in_chans=dim,
                embed_dim=2 * dim,
                patch_size=2,
                use_conv_embed=use_conv_embed,
                is_stem=False,
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor, h: int, w: int):
        """Returns (stage output tokens, h, w, next-stage tokens, h', w')."""
        for blk in self.blocks:
            x = blk(x, h, w)
        if self.downsample is None:
            return x, h, w, x, h, w
        grid = x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], h, w)
        down = self.downsample(grid)
        return x, h, w, down.flatten(2).transpose(1, 2), down.shape[-2], down.shape[-1]


class FocalNet(FrozenTrainMixin, nn.Module):
    """FocalNet backbone returning ``res2..res5`` feature maps (NCHW).

    Args (keyword-only):
        style: ``"focal_dw"`` (depthwise residual convs, stem padding 3) or ``"focal"``.
        embed_dim: channels of stage 1 (doubles per stage). depths: blocks per stage (4 stages).
        focal_levels / focal_windows: per stage. out_indices: stages that get an output norm.
        frozen: freeze all parameters and keep eval mode (default True, FIND keeps it frozen).
    """

    def __init__(
        self,
        *,
        style: str = "focal_dw",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        focal_levels: Sequence[int] = (3, 3, 3, 3),
        focal_windows: Sequence[int] = (3, 3, 3, 3),
        in_chans: int = 3,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        patch_norm: bool = True,
        use_conv_embed: bool = True,
        use_postln: bool = True,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = True,
        use_layerscale: bool = True,
        layerscale_value: float = 1e-4,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen: bool = True,
    ):
        super().__init__()
        if style not in ("focal_dw", "focal"):
            raise ValueError(f"FocalNet: style must be 'focal_dw' or 'focal', got {style!r}")
        n = len(depths)
        for name, seq in (("focal_levels", focal_levels), ("focal_windows", focal_windows)):
            if len(seq) != n:
                raise ValueError(f"FocalNet: {name} has {len(seq)} entries, expected {n} (depths)")
        if n != 4 or any(i not in range(n) for i in out_indices):
            raise ValueError(
                f"FocalNet: need 4 stages and out_indices in 0..3, got {depths}, " f"{out_indices}"
            )
        self.style = style
        self.out_indices = tuple(out_indices)
        self.num_features: List[int] = [int(embed_dim * 2**i) for i in range(n)]
        self.patch_embed = PatchEmbed(
            in_chans=in_chans,
            embed_dim=embed_dim,
            patch_size=patch_size,
            use_conv_embed=use_conv_embed,
            is_stem=True,
            stem_padding=3 if style == "focal_dw" else 2,
            use_norm=patch_norm,
        )
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        # Linearly increasing stochastic depth (plain floats: also works under a meta device).
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i in range(n):
            block_kwargs = dict(
                focal_level=focal_levels[i],
                focal_window=focal_windows[i],
                mlp_ratio=mlp_ratio,
                drop=drop_rate,
                depthwise=style == "focal_dw",
                use_postln=use_postln,
                use_postln_in_modulation=use_postln_in_modulation,
                scaling_modulator=scaling_modulator,
                use_layerscale=use_layerscale,
                layerscale_value=layerscale_value,
            )
            self.layers.append(
                BasicLayer(
                    dim=self.num_features[i],
                    depth=depths[i],
                    drop_paths=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < n - 1,
                    use_conv_embed=use_conv_embed,
                    block_kwargs=block_kwargs,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self._init_weights()
        if frozen:
            freeze_(self)

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> Dict[str, int]:
        return {STAGE_NAMES[i]: self.num_features[i] for i in self.out_indices}

    @property
    def out_strides(self) -> Dict[str, int]:
        return {STAGE_NAMES[i]: 4 * 2**i for i in self.out_indices}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` ->
        ``{"res2": [B, C, H/4, W/4], ..., "res5": [B, 8C, H/32, W/32]}`` (C = embed_dim)."""
        if x.dim() != 4:
            raise ValueError(f"FocalNet expects images [B, C, H, W], got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = {}
        for i, layer in enumerate(self.layers):
            out, oh, ow, x, h, w = layer(x, h, w)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                b = out.shape[0]
                outs[STAGE_NAMES[i]] = out.view(b, oh, ow, -1).permute(0, 3, 1, 2).contiguous()
        return outs


def build_focalnet(variant: str, **overrides) -> FocalNet:
    """Build a FIND FocalNet variant (``"focalt"`` or ``"focall"``, values from
    :data:`find_plugin.presets.FOCALNET_VARIANTS`); keyword overrides win."""
    if variant not in FOCALNET_VARIANTS:
        raise KeyError(
            f"build_focalnet: unknown preset {variant!r}; known {sorted(FOCALNET_VARIANTS)}"
        )
    return FocalNet(**dict(FOCALNET_VARIANTS[variant], **overrides))
