"""X-Decoder / SEEM pixel decoder ``transformer_encoder_fpn`` (frozen in FIND).

FPN over the backbone maps with GroupNorm convs; the coarsest map (res5) is projected to
``conv_dim`` and refined by a plain (non-deformable) post-norm transformer encoder with a 2-D sine
positional encoding; the top-down path adds nearest-upsampled coarser maps to 1x1 lateral
projections, then a 3x3 conv+GN+ReLU per level. Outputs (for 4 inputs res2..res5):

* ``multi_scale_features``: the first 3 top-down maps, ``[B, conv_dim, H/32, W/32]``,
  ``[..., H/16, W/16]``, ``[..., H/8, W/8]`` (level 0 = stride 32).
* ``mask_features``: a **3x3** conv (with bias) of the finest (stride 4) map,
  ``[B, mask_dim, H/4, W/4]``
  (the official code uses kernel 3; checkpoint key ``mask_features.weight`` is ``[M, C, 3, 3]``).
* ``transformer_encoder_features``: encoder output at stride 32, ``[B, conv_dim, H/32, W/32]``.

Sub-module names equal the official ones after stripping ``sem_seg_head.pixel_decoder.``: for the
input of stride rank ``i`` (1 = finest) ``adapter_i`` (1x1 lateral conv + ``norm``) and ``layer_i``
(3x3 output conv + ``norm``); the coarsest input has ``input_proj``,
``transformer.encoder.layers.*`` and ``layer_<n>`` only.

Re-implements (facts from the papers and code, no code copied):
- X-Decoder: Zou et al., "Generalized Decoding for Pixel, Image, and Language", CVPR 2023
  (github.com/microsoft/X-Decoder).
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
"""

from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...core.layers import sine_position_encoding
from .freezing import FrozenTrainMixin, freeze_
from .winograd import conv3x3

__all__ = ["TransformerEncoderPixelDecoder", "normalize_input_shape"]


def normalize_input_shape(input_shape: Mapping[str, object]) -> List[Tuple[str, int, int]]:
    """Turn ``{name: ShapeSpec | (channels, stride) | {"channels", "stride"}}`` into a list of
    ``(name, channels, stride)`` sorted from the finest to the coarsest stride."""
    if not isinstance(input_shape, Mapping) or not input_shape:
        raise ValueError(
            f"input_shape must be a non-empty mapping name -> shape, got {input_shape!r}"
        )
    out = []
    for name, spec in input_shape.items():
        if isinstance(spec, Mapping):
            ch, st = spec.get("channels"), spec.get("stride")
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            ch, st = spec
        else:
            ch, st = getattr(spec, "channels", None), getattr(spec, "stride", None)
        if not isinstance(ch, int) or not isinstance(st, int) or ch <= 0 or st <= 0:
            raise ValueError(
                f"input_shape[{name!r}] must give positive int channels and stride, got {spec!r}"
            )
        out.append((name, ch, st))
    return sorted(out, key=lambda t: t[2])


class ConvNorm(nn.Conv2d):
    """``nn.Conv2d`` with an optional ``norm`` sub-module and activation (detectron2 naming)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, *, norm: Optional[nn.Module], relu: bool
    ):
        super().__init__(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=norm is None)
        self.norm = norm
        self.relu = relu
        # Caffe2-style "xavier" fill used by detectron2's FPNs.
        nn.init.kaiming_uniform_(self.weight, a=1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1) and x.device.type == "cpu":
            # A 1x1 convolution is a product over channels: on CPU one GEMM is faster than
            # oneDNN's NCHW 1x1 convolution (the 96 -> 512 lateral at stride 4 takes 2/3 of it)
            b, c, h, w = x.shape
            x = torch.matmul(self.weight.view(self.out_channels, c), x.reshape(b, c, h * w))
            x = x.view(b, self.out_channels, h, w)
            if self.bias is not None:
                x = x + self.bias.view(1, -1, 1, 1)
        elif self.kernel_size == (3, 3):  # stride 1, padding 1 (ConvNorm's only 3x3 form)
            x = conv3x3(x, self.weight, self.bias)  # Winograd on CPU where it pays
        else:
            x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _make_norm(norm: str, channels: int) -> Optional[nn.Module]:
    if norm == "":
        return None
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"pixel decoder norm must be 'GN' or '' (none), got {norm!r}")


class EncoderLayer(nn.Module):
    """DETR transformer encoder layer (self-attention with PE added to q/k, ReLU FFN).

    Tokens are sequence-first: ``[HW, B, C]``.
    """

    def __init__(
        self, *, d_model: int, nhead: int, dim_feedforward: int, dropout: float, pre_norm: bool
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            s = self.norm1(src)
            src = src + self.dropout1(self.self_attn(s + pos, s + pos, value=s)[0])
            return src + self.dropout2(self._ffn(self.norm2(src)))
        q = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, q, value=src)[0]))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class TransformerEncoder(nn.Module):
    """Stack of :class:`EncoderLayer`; final LayerNorm only for pre-norm (as in DETR)."""

    def __init__(self, *, num_layers: int, pre_norm: bool, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            [EncoderLayer(pre_norm=pre_norm, **layer_kwargs) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(layer_kwargs["d_model"]) if pre_norm else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class TransformerEncoderOnly(nn.Module):
    """Runs :class:`TransformerEncoder` on a map: ``[B, C, H, W]`` + PE -> ``[B, C, H, W]``."""

    def __init__(
        self,
        *,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        pre_norm: bool,
    ):
        super().__init__()
        self.encoder = TransformerEncoder(
            num_layers=num_encoder_layers,
            pre_norm=pre_norm,
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, c, h, w = src.shape
        # contiguous sequence-first tokens: a linear layer on the permuted view [HW, B, C]
        # (strides 1, C*HW, HW) runs as HW batched [1, C] x [C, C] products on CPU (~10x slower;
        # the value projection of the first layer reads it)
        tokens = src.flatten(2).permute(2, 0, 1).contiguous()
        out = self.encoder(tokens, pos.flatten(2).permute(2, 0, 1))
        return out.permute(1, 2, 0).reshape(b, c, h, w)


class TransformerEncoderPixelDecoder(FrozenTrainMixin, nn.Module):
    """FPN pixel decoder + transformer encoder on the coarsest input (``transformer_encoder_fpn``).

    Args (keyword-only):
        input_shape: ``{name: ShapeSpec | (channels, stride)}`` of the backbone maps to use (>= 2).
        conv_dim: FPN width (512 in FIND). mask_dim: channels of ``mask_features`` (512).
        norm: ``"GN"`` (GroupNorm, 32 groups) or ``""`` (no norm, convs get a bias).
        transformer_enc_layers / transformer_nheads / transformer_dim_feedforward /
        transformer_dropout / transformer_pre_norm: encoder on the coarsest map
        (6 / 8 / 2048 / 0.0 / False in FIND).
        num_feature_levels: how many top-down maps form ``multi_scale_features`` (3).
        frozen: freeze parameters and keep eval mode (default True).
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, object],
        conv_dim: int = 512,
        mask_dim: int = 512,
        norm: str = "GN",
        transformer_enc_layers: int = 6,
        transformer_nheads: int = 8,
        transformer_dim_feedforward: int = 2048,
        transformer_dropout: float = 0.0,
        transformer_pre_norm: bool = False,
        num_feature_levels: int = 3,
        frozen: bool = True,
    ):
        super().__init__()
        shapes = normalize_input_shape(input_shape)
        if len(shapes) < 2:
            raise ValueError(f"pixel decoder needs at least 2 input maps, got {shapes}")
        if conv_dim % 2 or conv_dim % transformer_nheads:
            raise ValueError(
                f"conv_dim ({conv_dim}) must be even and divisible by transformer_nheads "
                f"({transformer_nheads})"
            )
        self.in_features = [s[0] for s in shapes]
        self.in_strides = [s[2] for s in shapes]
        self.conv_dim, self.mask_dim = conv_dim, mask_dim
        self.num_feature_levels = num_feature_levels
        n = len(shapes)
        for idx, (_, ch, _) in enumerate(shapes[:-1]):
            lat = ConvNorm(ch, conv_dim, 1, norm=_make_norm(norm, conv_dim), relu=False)
            out = ConvNorm(conv_dim, conv_dim, 3, norm=_make_norm(norm, conv_dim), relu=True)
            self.add_module(f"adapter_{idx + 1}", lat)
            self.add_module(f"layer_{idx + 1}", out)
        self.mask_features = ConvNorm(conv_dim, mask_dim, 3, norm=None, relu=False)
        self.input_proj = nn.Conv2d(shapes[-1][1], conv_dim, 1)
        nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
        nn.init.zeros_(self.input_proj.bias)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            pre_norm=transformer_pre_norm,
        )
        self.num_pos_feats = conv_dim // 2  # 2-D sine PE (normalize=True), as the interface
        top = ConvNorm(conv_dim, conv_dim, 3, norm=_make_norm(norm, conv_dim), relu=True)
        self.add_module(f"layer_{n}", top)
        # Names (not module references) in top-down order, so that module swaps stay effective.
        self._lateral_names = [None] + [f"adapter_{i}" for i in range(n - 1, 0, -1)]
        self._output_names = [f"layer_{i}" for i in range(n, 0, -1)]
        if frozen:
            freeze_(self)

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Mask2Former-style API: ``(mask_features, transformer_encoder_features, multi_scale)``."""
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"pixel decoder: features missing {missing}; got {sorted(features)}")
        multi_scale: List[torch.Tensor] = []
        y = enc = None
        for idx, name in enumerate(self.in_features[::-1]):
            x = features[name]
            if idx == 0:
                enc = self.transformer(
                    self.input_proj(x), sine_position_encoding(x, num_pos_feats=self.num_pos_feats)
                )
                y = getattr(self, self._output_names[0])(enc)
            else:
                lat = getattr(self, self._lateral_names[idx])(x)
                y = lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")
                y = getattr(self, self._output_names[idx])(y)
            if len(multi_scale) < self.num_feature_levels:
                multi_scale.append(y)
        return self.mask_features(y), enc, multi_scale

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, object]:
        """``features``: backbone dict -> ``{"mask_features", "transformer_encoder_features",
        "multi_scale_features"}`` (see module docstring for shapes)."""
        mask, enc, ms = self.forward_features(features)
        return {
            "mask_features": mask,
            "transformer_encoder_features": enc,
            "multi_scale_features": ms,
        }
