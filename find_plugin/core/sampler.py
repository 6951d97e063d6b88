"""Visual-prompt embedding sampler (spec §1.3, "embedding sampler").

Prompt masks (strokes, points, boxes, reference masks; positive and negative) become point tokens:

1. per image, take the nonzero pixels of all prompt masks and draw up to ``max_points`` (512)
   without replacement, with probabilities balanced so every prompt mask gets equal total mass
   (when there are at most ``max_points`` pixels all are kept, in ``nonzero()`` order, as the
   official sampler does);
2. coordinates are (y / h, x / w) where (h, w) is the prompt mask's OWN size (official
   convention; not h - 1 / w - 1);
3. per level l: bilinear sampling (``grid_sample``, align_corners=True) of the level's features
   (with level embedding) projected by ``mask_sptial_embed[l]`` (sampling and the linear
   projection commute, so the projection is applied to the sampled points);
4. ``pn_indicator[0]`` is added to positive points and ``pn_indicator[1]`` to negative points;
5. every point keeps the index of its prompt (used by indexed attention); padding points get
   ``NO_ITEM`` (-1; the official code pads with -2 / -7, which no prompt matches either).

Points are sampled independently per level (as official). Pre-sampled points can be given
instead: for each level, a list over images of dicts ``{"index": [P] long, "coords": [P, 2]
float (y/h, x/w), "positive": [P] bool}``.

Re-implements (facts from the papers and code, no code copied):
- FIND: Zou et al., "Interfacing Foundation Models' Embeddings", arXiv 2312.07532
  (github.com/UX-Decoder/FIND).
- SEEM: Zou et al., "Segment Everything Everywhere All at Once", NeurIPS 2023
  (github.com/UX-Decoder/Segment-Everything-Everywhere-All-At-Once).
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conventions import NO_ITEM


def sample_prompt_points(
    masks: torch.Tensor, *, max_points: int, generator: Optional[torch.Generator] = None
) -> Dict[str, torch.Tensor]:
    """Sample points of ``masks`` [n, H, W] (bool) -> {"index": [P] long, "coords": [P, 2]}."""
    if masks.dim() != 3:
        raise ValueError(f"prompt masks must be [n, H, W], got shape {tuple(masks.shape)}")
    nz = masks.nonzero()
    h, w = masks.shape[-2:]
    if len(nz) > max_points:
        ids = nz[:, 0]
        counts = torch.bincount(ids, minlength=masks.shape[0]).to(torch.float64)
        n_present = (counts > 0).sum()
        probs = 1.0 / (n_present * counts[ids])
        pick = torch.multinomial(probs, max_points, replacement=False, generator=generator)
        nz = nz[pick.sort()[0]]
    coords = nz[:, 1:].to(torch.float32) / torch.tensor([h, w], dtype=torch.float32)
    return {"index": nz[:, 0].long(), "coords": coords.to(masks.device)}


def sample_prompts(
    pos_masks: Sequence[torch.Tensor],
    neg_masks: Optional[Sequence[torch.Tensor]],
    *,
    num_levels: int,
    max_points: int,
    generator: Optional[torch.Generator] = None,
) -> List[List[Dict[str, torch.Tensor]]]:
    """Per level, per image: positive then negative points (independent draws per level)."""
    levels = []
    for _ in range(num_levels):
        per_image = []
        for b, pos in enumerate(pos_masks):
            p = sample_prompt_points(pos.bool(), max_points=max_points, generator=generator)
            parts = [p]
            flags = [torch.ones(len(p["index"]), dtype=torch.bool, device=pos.device)]
            if neg_masks is not None and neg_masks[b] is not None:
                n = sample_prompt_points(
                    neg_masks[b].bool(), max_points=max_points, generator=generator
                )
                parts.append(n)
                flags.append(torch.zeros(len(n["index"]), dtype=torch.bool, device=pos.device))
            per_image.append(
                {
                    "index": torch.cat([x["index"] for x in parts]),
                    "coords": torch.cat([x["coords"] for x in parts]),
                    "positive": torch.cat(flags),
                }
            )
        levels.append(per_image)
    return levels


class VisualPromptSampler(nn.Module):
    """Turns prompt points into per-level tokens. Parameters: ``mask_sptial_embed.{l}`` [C, C],
    ``pn_indicator`` Embedding(2, C)."""

    def __init__(self, *, hidden_dim: int, num_levels: int = 3, max_points: int = 512):
        super().__init__()
        self.num_levels = num_levels
        self.max_points = max_points
        self.mask_sptial_embed = nn.ParameterList(
            [nn.Parameter(torch.randn(hidden_dim, hidden_dim) * 0.02) for _ in range(num_levels)]
        )
        self.pn_indicator = nn.Embedding(2, hidden_dim)

    def forward(
        self,
        level_features: Sequence[torch.Tensor],
        points: Sequence[Sequence[Dict[str, torch.Tensor]]],
    ) -> List[Dict[str, torch.Tensor]]:
        """level_features: per level [B, C, h, w] (level embedding included); points: per level,
        per image (see module docstring). Returns per level {"tokens": [B, P, C], "padding":
        [B, P] bool (True = pad), "index": [B, P] long (prompt id, NO_ITEM on padding)}."""
        if len(points) != len(level_features):
            raise ValueError(
                f"points: expected {len(level_features)} levels, got {len(points)} "
                "(pass one list of per-image point dicts per feature level)"
            )
        out = []
        for lvl, (feat, per_image) in enumerate(zip(level_features, points)):
            bsz = feat.shape[0]
            if len(per_image) != bsz:
                raise ValueError(f"points[{lvl}]: expected {bsz} images, got {len(per_image)}")
            n_max = max([len(p["index"]) for p in per_image] + [1])
            dev = feat.device
            coords = torch.zeros(bsz, n_max, 2, device=dev, dtype=feat.dtype)
            index = torch.full((bsz, n_max), NO_ITEM, dtype=torch.long, device=dev)
            sign = torch.zeros(bsz, n_max, dtype=torch.long, device=dev)  # 1 pos, -1 neg, 0 pad
            for b, p in enumerate(per_image):
                n = len(p["index"])
                coords[b, :n] = p["coords"].to(dev, feat.dtype)
                index[b, :n] = p["index"].to(dev).long()
                pos = p.get("positive")
                pos = torch.ones(n, dtype=torch.bool, device=dev) if pos is None else pos.to(dev)
                sign[b, :n] = torch.where(pos, 1, -1)
            # grid_sample wants (x, y) in [-1, 1]; align_corners=True as official point_sample.
            grid = (2.0 * coords.flip(-1) - 1.0)[:, :, None, :]
            sampled = F.grid_sample(feat, grid, mode="bilinear", align_corners=True)
            tokens = sampled[..., 0].transpose(1, 2) @ self.mask_sptial_embed[lvl]
            tokens = tokens + (sign == 1)[..., None] * self.pn_indicator.weight[0]
            tokens = tokens + (sign == -1)[..., None] * self.pn_indicator.weight[1]
            out.append({"tokens": tokens, "padding": sign == 0, "index": index})
        return out
