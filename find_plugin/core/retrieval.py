"""Contrastive retrieval losses (spec §3.2); evaluation lives in find_plugin.tasks.metrics.

* :func:`itc_loss` - symmetric InfoNCE between image and text embeddings (L2-normalised, scale
  ``min(exp(logit_scale), 100)``, gathered over processes with the local gradient kept).
* :func:`fine_grained_loss` - object-proposal semantics vs caption token embeddings with
  position-weighted soft targets, ``0.7 * i2t + 0.3 * t2i``.

Re-implements (facts from the papers and code, no code copied):
- CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
  ICML 2021 (github.com/openai/CLIP).
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
"""

import torch
import torch.nn.functional as F

from .distributed import all_gather_with_grad
from .similarity import clamped_scale, l2_normalize

__all__ = [
    "itc_loss",
    "fine_grained_loss",
    "soft_cross_entropy",
]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_rows(sum_cols(-target * log_softmax(logits)))`` (target rows need not sum to 1)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def itc_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE: image_emb [B, D] and text_emb [B, D] are paired row by row.

    Returns ``(CE(s * I T^T, arange) + CE(s * T I^T, arange)) / 2`` with s = min(exp(ls), 100).
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"itc_loss expects two [B, D] tensors of equal shape, got {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )
    img = l2_normalize(all_gather_with_grad(image_emb))
    txt = l2_normalize(all_gather_with_grad(text_emb))
    scale = clamped_scale(logit_scale).to(img)
    logits = scale * img @ txt.t()
    gt = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, gt) + F.cross_entropy(logits.t(), gt)) / 2


def fine_grained_loss(
    proposal_emb: torch.Tensor,
    token_emb: torch.Tensor,
    token_valid: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    i2t_weight: float = 0.7,
    t2i_weight: float = 0.3,
) -> torch.Tensor:
    """Proposal-token contrastive term of ``retrieval_decoder`` (local batch, not gathered).

    Args:
        proposal_emb: [B, Q, D] semantic embeddings of the object proposals (``pred_captions``).
        token_emb: [B, T, D] projected caption token embeddings (padded).
        token_valid: [B, T] bool, True = real token.
        logit_scale: log-space scalar temperature.

    Image i -> all valid tokens of the batch: logit = s * mean_q <v_iq, t_k>; the soft target is the
    tokens of caption i weighted by their position (1, 2, 3, ...), normalised to sum 1.
    Token k -> images: the same logits transposed; target column of ``gt.T``, i.e. the normalised
    position weight at its own image (this row does not sum to 1, as in the official code).
    """
    if proposal_emb.dim() != 3 or token_emb.dim() != 3 or token_valid.shape != token_emb.shape[:2]:
        raise ValueError(
            "fine_grained_loss expects proposal_emb [B,Q,D], token_emb [B,T,D], token_valid [B,T]; "
            f"got {tuple(proposal_emb.shape)}, {tuple(token_emb.shape)}, {tuple(token_valid.shape)}"
        )
    bsz = proposal_emb.shape[0]
    keep = token_valid.bool()
    position = keep.float() * keep.float().cumsum(dim=1)  # 1, 2, 3, ... on valid tokens
    tokens = l2_normalize(token_emb)[keep]  # [Nt, D]
    props = l2_normalize(proposal_emb)
    scale = clamped_scale(logit_scale).to(props)

    eye = torch.eye(bsz, device=props.device, dtype=props.dtype)
    gt = (eye[:, :, None] * position[None].to(props.dtype))[:, keep]  # [B, Nt]
    gt = gt / (gt.sum(1, keepdim=True) + 1e-7)

    # mean over proposals of dot products == dot with the mean proposal
    logits = scale * props.mean(1) @ tokens.t()  # [B, Nt]
    loss_i2t = soft_cross_entropy(logits, gt)
    loss_t2i = soft_cross_entropy(logits.t(), gt.t())
    return i2t_weight * loss_i2t + t2i_weight * loss_t2i
