"""Proposal <-> item logits shared by matching, losses and inference.

Each task scores its 100 (here: Q) proposals against a per-image set of items (phrases, prompts,
entities). The logits are [Q, n] for one image: column j is a distribution over proposals after
``softmax(dim=0)``. The space is chosen per task (spec §1.5):

* grounding: semantic space,
  ``min(exp(logit_scale), 100) * cos(pred_gtexts, pred_grounding_query)``;
* interactive: pixel space, raw dot ``pred_smaskembs . pred_pspatials``;
* interleave: pixel dot for visual entities, semantic dot (no normalisation, no scale) for text
  ones.
"""

import torch

__all__ = [
    "l2_normalize",
    "clamped_scale",
    "grounding_logits",
    "spatial_logits",
    "interleave_logits",
]

# The official code caps the contrastive temperature exp(logit_scale) at 100 (CLIP convention).
MAX_LOGIT_SCALE = 100.0


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``x / (||x|| + eps)`` along the last axis (eps added to the norm as in the official code)."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def clamped_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """``min(exp(logit_scale), 100)``; ``logit_scale`` is the log-space scalar temperature."""
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale))
    if logit_scale.numel() != 1:
        raise ValueError(
            f"logit_scale must be a scalar tensor, got shape {tuple(logit_scale.shape)}"
        )
    return logit_scale.reshape(()).exp().clamp(max=MAX_LOGIT_SCALE)


def _check_2d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be [n, D] for one image, got shape {tuple(x.shape)}")


def grounding_logits(
    pred_gtexts: torch.Tensor, grounding_query: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Grounding proposals [Q, D] vs description queries [G, D] -> [Q, G] scaled cosine."""
    _check_2d("pred_gtexts", pred_gtexts)
    _check_2d("pred_grounding_query", grounding_query)
    scale = clamped_scale(logit_scale).to(pred_gtexts)
    return scale * (l2_normalize(pred_gtexts) @ l2_normalize(grounding_query).t())


def spatial_logits(smaskembs: torch.Tensor, pspatials: torch.Tensor) -> torch.Tensor:
    """Segment proposals [Q, D] vs spatial queries [P, D] (pixel space) -> [Q, P] raw dots."""
    _check_2d("pred_smaskembs", smaskembs)
    _check_2d("pred_pspatials", pspatials)
    return smaskembs @ pspatials.t()


def interleave_logits(
    imaskembs: torch.Tensor,
    entity_pixel: torch.Tensor,
    interleave_objects: torch.Tensor,
    entity_class: torch.Tensor,
    is_visual: torch.Tensor,
) -> torch.Tensor:
    """Mixed logit of entity proposals vs entity queries -> [Q, E].

    Args:
        imaskembs: [Q, D] pixel embeddings of the entity proposals.
        entity_pixel: [E, D] pixel embeddings of the entity queries.
        interleave_objects: [Q, D] semantic embeddings of the entity proposals.
        entity_class: [E, D] semantic embeddings of the entity queries.
        is_visual: [E] bool/0-1; True = visual entity (pixel dot), False = text entity
            (semantic dot).
    """
    for name, x in (
        ("pred_imaskembs", imaskembs),
        ("pred_entity_pixel", entity_pixel),
        ("pred_interleave_objects", interleave_objects),
        ("pred_entity_class", entity_class),
    ):
        _check_2d(name, x)
    if is_visual.dim() != 1 or is_visual.shape[0] != entity_pixel.shape[0]:
        raise ValueError(
            f"is_visual must be [E={entity_pixel.shape[0]}], got shape {tuple(is_visual.shape)}"
        )
    vis = is_visual.to(imaskembs.dtype)[None, :]
    pixel = imaskembs @ entity_pixel.t()
    semantic = interleave_objects @ entity_class.t()
    # Blend rather than index: both branches stay in the graph (zero grad on the unused one).
    return pixel * vis + semantic * (1 - vis)
