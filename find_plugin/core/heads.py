"""Prediction heads of the FIND interface (spec §1.5), shared by every output variable.

For the output rows x [B, N, C] of the combined sequence:

1. x = decoder_norm(x);
2. image-query pooling: the image query's x is replaced by sum_i w_i x_i over the object
   proposals, w = softmax_i(cos(x_img, x_i)) (weights detached);
3. semantic = x @ class_embed  (dim_proj; the "semantic space");
4. pixel = mask_embed(x)       (3-layer MLP, mask_dim; the "pixel space");
5. masks = einsum(pixel, mask_features) at stride 4 (only for rows that need masks);
6. class logits = exp(logit_scale) * cos(semantic, class bank) (object proposals);
7. next-layer attention mask: sigmoid(masks at the level size) < 0.5 (True = blocked).

Step 7 needs the masks only at the next layer's level size: the masks are linear in the mask
features and a bilinear resize is linear too, so resize(einsum(pixel, F)) = einsum(pixel,
resize(F)). The heads compute it from the mask features resized once per pass to each level size
(``attn_features``), on the mask rows only: a fraction of the work of resizing full-resolution
masks (the same logits up to float rounding). Between layers, when no per-layer outputs are
wanted (inference without ``aux_outputs``), :meth:`PredictionHeads.attention_mask` computes only
step 7. With per-layer outputs (training, ``dense_masks=False``) step 5 is left factored
(:class:`~find_plugin.core.mask_logits.FactoredMasks`): the criterion reads the masks at its
points only, and any other consumer gets them made on first read
(:class:`~find_plugin.core.mask_logits.LayerOutputs`).

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
- Mask2Former: Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation",
  CVPR 2022 (github.com/facebookresearch/Mask2Former).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention_mask import SequenceLayout
from .layers import MLP
from .mask_logits import FactoredMasks, LayerOutputs
from .prototypes import IMAGE_QUERY, OBJECT, VariableSpec
from .similarity import l2_normalize


def cosine_logits(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale) * cos(a, b): a [B, n, D], b [K, D] -> [B, n, K] (official eps 1e-7)."""
    return logit_scale.exp() * l2_normalize(a) @ l2_normalize(b).t()


class PredictionHeads(nn.Module):
    """Parameters: ``decoder_norm``, ``class_embed`` [hidden, dim_proj] (no bias), ``mask_embed``
    (MLP ``layers.{0,1,2}``)."""

    def __init__(self, *, hidden_dim: int, dim_proj: int, mask_dim: int):
        super().__init__()
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Parameter(torch.randn(hidden_dim, dim_proj) * 0.02)
        self.mask_embed = MLP(in_dim=hidden_dim, hidden=hidden_dim, out_dim=mask_dim, num_layers=3)

    def forward(
        self,
        x: torch.Tensor,
        mask_features: torch.Tensor,
        *,
        object_slice: Tuple[int, int],
        image_row: Optional[int],
        mask_rows: torch.Tensor,
        attn_features: Optional[torch.Tensor] = None,
        dense_masks: bool = True,
        sample_features: Optional[torch.Tensor] = None,
    ):
        """x [B, N, C] (output rows); mask_rows [M] long (rows that need masks); attn_features
        [B, mask_dim, h, w]: mask features resized to the next layer's level size (None: no next
        layer); returns dict: semantic [B, N, dim_proj], pixel [B, N, mask_dim], masks
        [B, M, H, W] (``dense_masks``) or :class:`FactoredMasks` of them (``sample_features``:
        the mask features in channels-last format for their point reads), attn_blocked
        [B, M, h*w] bool (None without ``attn_features``)."""
        x = self.decoder_norm(x)
        if image_row is not None:
            o0, o1 = object_slice
            obj = x[:, o0:o1]
            normed = l2_normalize(x)
            sim = normed[:, image_row : image_row + 1] @ normed[:, o0:o1].transpose(1, 2)
            weights = sim.softmax(-1).detach()  # [B, 1, n_obj]
            pooled = weights @ obj
            x = torch.cat([x[:, :image_row], pooled, x[:, image_row + 1 :]], dim=1)
        semantic = x @ self.class_embed
        pixel = self.mask_embed(x)
        mask_pixel = pixel[:, mask_rows]
        if dense_masks:
            masks = torch.einsum("bqc,bchw->bqhw", mask_pixel, mask_features)
        else:
            masks = FactoredMasks(mask_pixel, mask_features, sample_features)
        blocked = None
        if attn_features is not None:
            # detached: the attention mask carries no gradient, so no graph is built for it
            attn = torch.einsum("bqc,bchw->bqhw", mask_pixel.detach(), attn_features.detach())
            blocked = _blocked(attn)
        return {"semantic": semantic, "pixel": pixel, "masks": masks, "attn_blocked": blocked}

    def attention_mask(
        self, x: torch.Tensor, attn_features: torch.Tensor, *, mask_rows: torch.Tensor
    ) -> torch.Tensor:
        """Only the next layer's attention mask: x [B, N, C] (output rows), ``attn_features``
        [B, mask_dim, h, w] (mask features bilinearly resized to the level size), mask_rows [M]
        -> attn_blocked [B, M, h*w] bool (True = blocked), as :meth:`forward` gives it. The image
        query pooling only changes the image row, which has no mask: it is skipped."""
        pixel = self.mask_embed(self.decoder_norm(x[:, mask_rows]))
        return _blocked(torch.einsum("bqc,bchw->bqhw", pixel, attn_features))


def _blocked(mask_logits: torch.Tensor) -> torch.Tensor:
    """[B, M, h, w] logits -> [B, M, h*w] bool, True where sigmoid < 0.5 (attention blocked)."""
    return (mask_logits.sigmoid() < 0.5).flatten(2).detach()


@dataclass
class OutputPlan:
    """Which sequence rows the heads read and where each variable's outputs are.

    ``rows`` [No] long: sequence rows of the variables with outputs (in prototype order);
    ``slices[name]``: that variable's rows within them; ``mask_rows`` [M] long: positions (within
    the output rows) of the variables with a mask output; ``mask_slices[name]``: their positions
    within the masks; ``mask_seq_rows`` [M]: the same rows in the sequence."""

    specs: List[VariableSpec]
    rows: torch.Tensor
    slices: Dict[str, Tuple[int, int]]
    mask_rows: torch.Tensor
    mask_slices: Dict[str, Tuple[int, int]]
    mask_seq_rows: torch.Tensor
    object_slice: Tuple[int, int]
    image_row: Optional[int]

    @classmethod
    def from_layout(cls, layout: SequenceLayout, *, pool_image_query: bool) -> "OutputPlan":
        specs = [s for s in layout.specs if s.outputs]
        rows = torch.cat([layout.rows(s.name) for s in specs])
        slices = _consecutive(specs, lambda s: layout.slices[s.name])
        mask_specs = [s for s in specs if any(sp == "mask" for _, sp in s.outputs)]
        mask_rows = torch.cat(
            [torch.arange(*slices[s.name], device=rows.device) for s in mask_specs]
        )
        return cls(
            specs=specs,
            rows=rows,
            slices=slices,
            mask_rows=mask_rows,
            mask_slices=_consecutive(mask_specs, lambda s: slices[s.name]),
            mask_seq_rows=rows[mask_rows],
            object_slice=slices[OBJECT],
            image_row=slices[IMAGE_QUERY][0] if pool_image_query else None,
        )

    def organize(self, heads: Dict, class_bank: Optional[torch.Tensor], logit_scale: torch.Tensor):
        """Heads' output of one layer -> the named outputs (spec §1.5) of every variable;
        ``class_logits`` outputs only when a class bank is given. A dict, or a
        :class:`LayerOutputs` (mask outputs made on first read) when the masks are factored."""
        res, lazy = {}, {}
        factored = isinstance(heads["masks"], FactoredMasks)
        for s in self.specs:
            rows = slice(*self.slices[s.name])
            for name, space in s.outputs:
                if space == "semantic":
                    res[name] = heads["semantic"][:, rows]
                elif space == "pixel":
                    res[name] = heads["pixel"][:, rows]
                elif space == "mask" and factored:
                    res[name] = None  # keeps its place; LayerOutputs makes it on first read
                    lazy[name] = self.mask_slices[s.name]
                elif space == "mask":
                    res[name] = heads["masks"][:, slice(*self.mask_slices[s.name])]
                elif space == "class_logits" and class_bank is not None:
                    res[name] = cosine_logits(heads["semantic"][:, rows], class_bank, logit_scale)
        return LayerOutputs(res, heads["masks"], lazy) if factored else res


def _consecutive(specs: Sequence[VariableSpec], span) -> Dict[str, Tuple[int, int]]:
    """Pack the variables' row counts ``span(spec)`` = (start, end) one after the other."""
    out, off = {}, 0
    for s in specs:
        a, b = span(s)
        out[s.name] = (off, off + b - a)
        off += b - a
    return out
