"""Interactive segmentation: visual prompts -> one mask per prompt (spec §2, §2.2, §1.6, §5.4).

Each prompt is a positive mask (and a negative mask) at image size; the interface samples up to
512 points of them (``tokens_vision_spatial``) and one spatial query per prompt reads its own
points (indexed attention). The mask of a prompt is the segment proposal with the largest
pixel-space dot product with its query (``interactive_pick``).

* training: K ~ U{1..max_prompts} instances of the image, each with one random shape (point,
  polygon, scribble or circle; :mod:`.prompts`); with probability ``correction_prob`` the adapter
  runs a no-grad pass first and :meth:`InteractiveTask.add_corrections` adds one corrective click
  per prompt plus ``prev_mask`` (the previous round's masks, read by the 32 spatial memories);
* evaluation: one prompt per instance, the first click of the click simulator (on an empty
  prediction: the interior point farthest from the boundary); further clicks come from
  :meth:`add_corrections` on the previous prediction (``max_clicks`` rounds, metric
  :class:`~.metrics.InteractiveMetric`); a record with ``prompts`` (clicks / scribbles given
  by a user, :mod:`.base`) uses them instead of the simulated first click.
"""

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from ..core.postprocess import interactive_pick, resize_mask_logits
from .base import FINDTask, pad_item_index, pad_masks, randint, record_size, register_task
from .metrics import InteractiveMetric
from .prompts import (
    TRAIN_PROMPT_KINDS,
    next_click,
    sample_prompt_kind,
    simulate_clicks,
    simulate_prompt,
)

__all__ = ["InteractiveTask", "ITEM_VARIABLE"]

ITEM_VARIABLE = "queries_vision_spatial"


@register_task
class InteractiveTask(FINDTask):
    """Args:
    max_prompts: at most this many prompted instances per image in training (official 1..9).
    kinds: training prompt shapes.
    correction_prob: probability of a corrective round in training (official 0.5).
    """

    name = "interactive"
    prototypes = ("spatial",)
    loss_groups = ("spatials",)
    metric = InteractiveMetric

    def __init__(
        self,
        *,
        max_prompts: int = 9,
        kinds: Sequence[str] = TRAIN_PROMPT_KINDS,
        correction_prob: float = 0.5,
    ):
        self.max_prompts = int(max_prompts)
        self.kinds = tuple(kinds)
        self.correction_prob = float(correction_prob)

    def sample(self, record, *, generator, encode_text, training) -> dict:
        size = record_size(record)
        if not training and record.get("prompts"):
            return self._given_prompts(record["prompts"], size)
        masks = record.get("masks")
        masks = torch.zeros(0, *size, dtype=torch.bool) if masks is None else masks.bool()
        masks = masks[masks.flatten(1).any(1)]  # an empty instance cannot be prompted
        if training and len(masks):
            k = randint(1, min(self.max_prompts, len(masks)), generator)
            masks = masks[torch.randperm(len(masks), generator=generator)[:k]]
            pos = torch.stack(
                [
                    simulate_prompt(
                        m, sample_prompt_kind(generator, self.kinds), generator=generator
                    )
                    for m in masks
                ]
            )
        else:
            empty = torch.zeros(size, dtype=torch.bool)
            pos = torch.stack([next_click(empty, m)[1] for m in masks]) if len(masks) else masks
        return {
            "image_size": size,
            "masks": masks,
            "pos": pos,
            "neg": torch.zeros_like(pos),
            "prev_mask": None,
        }

    @staticmethod
    def _given_prompts(prompts, size) -> dict:
        """Evaluation sample of given prompts (record ``prompts``); no ground truth: ``masks``
        are empty (nothing to score or correct against)."""
        pos, neg = [], []
        for k, p in enumerate(prompts):
            pk = torch.as_tensor(p["pos"]).bool()
            nk = torch.as_tensor(p["neg"]).bool() if p.get("neg") is not None else None
            nk = torch.zeros_like(pk) if nk is None else nk
            if tuple(pk.shape) != tuple(size) or tuple(nk.shape) != tuple(size):
                raise ValueError(
                    f"interactive: prompt {k} has masks of size {tuple(pk.shape)} / "
                    f"{tuple(nk.shape)}, the image is {tuple(size)}"
                )
            if not pk.any():
                raise ValueError(f"interactive: prompt {k} has no positive pixel")
            pos.append(pk)
            neg.append(nk)
        pos, neg = torch.stack(pos), torch.stack(neg)
        return {
            "image_size": size,
            "masks": torch.zeros_like(pos),
            "pos": pos,
            "neg": neg,
            "prev_mask": None,
        }

    def wants_correction(self, generator: torch.Generator) -> bool:
        """Training: whether this step runs a corrective round first (official p = 0.5)."""
        return bool(torch.rand((), generator=generator) < self.correction_prob)

    def pack_inputs(self, samples, *, project, padded_size) -> Dict[str, dict]:
        inputs = {
            "pos_masks": [pad_masks(s["pos"], padded_size) for s in samples],
            "neg_masks": [pad_masks(s["neg"], padded_size) for s in samples],
            "query_index": pad_item_index([range(len(s["pos"])) for s in samples]),
        }
        prev = [s["prev_mask"] for s in samples]
        if any(p is not None for p in prev):
            if any(p is None for p in prev):
                raise ValueError("interactive: prev_mask must be set for every image or none")
            inputs["prev_mask"] = torch.stack(prev)
        return {"spatial": inputs}

    def build_targets(self, samples, *, project, padded_size) -> List[dict]:
        return [{"spatial_masks": pad_masks(s["masks"], padded_size)} for s in samples]

    def pick(self, outputs, b: int) -> torch.Tensor:
        """Mask logits [P, H/4, W/4] of the best segment proposal per prompt of image ``b``."""
        real = ~outputs["item_padding"][ITEM_VARIABLE][b]
        idx, _ = interactive_pick(outputs["pred_smaskembs"][b], outputs["pred_pspatials"][b, real])
        return outputs["pred_smasks"][b, idx]

    def predict(self, outputs, b: int, *, padded_size, image_size, output_size) -> torch.Tensor:
        """Picked masks of image ``b`` at ``output_size`` [P, H, W] bool (official: bicubic, then
        sigmoid > 0.5)."""
        logits = resize_mask_logits(
            self.pick(outputs, b),
            padded_size=padded_size,
            image_size=image_size,
            output_size=output_size,
            task="interactive",
        )
        return logits > 0

    @staticmethod
    def click_ious(predict_fn, gt_masks: torch.Tensor, *, max_clicks: int) -> torch.Tensor:
        """Evaluation rounds of one image: ``predict_fn(pos, neg) -> [N, H, W] bool`` runs the
        model on the accumulated clicks; returns the IoU after each click [N, max_clicks] (the
        official click simulator and stop rule, :func:`.prompts.simulate_clicks`), the input of
        :class:`~.metrics.InteractiveMetric`."""
        return simulate_clicks(predict_fn, gt_masks, max_clicks=max_clicks)

    def add_corrections(self, samples: Sequence[dict], outputs) -> List[dict]:
        """Next round: per prompt one click from the click simulator on its current prediction
        (positive into ``pos``, negative into ``neg``); ``prev_mask`` [1, H/4, W/4] = the union
        (max) of the image's picked mask logits, read by the spatial memories. Returns new
        samples (the inputs are not modified)."""
        out = []
        for b, s in enumerate(samples):
            s = dict(s, pos=s["pos"].clone(), neg=s["neg"].clone())
            logits = self.pick(outputs, b).detach()
            h, w = s["image_size"]
            full = F.interpolate(
                logits[None].float(), scale_factor=4, mode="bilinear", align_corners=False
            )[0, :, :h, :w]
            for p, gt in enumerate(s["masks"]):
                positive, click = next_click(full[p] > 0, gt)
                target = s["pos"] if positive else s["neg"]
                target[p] |= click
            merged = logits.max(0, keepdim=True)[0] if len(logits) else None
            s["prev_mask"] = merged if merged is not None else _no_prev(outputs, b)
            out.append(s)
        return out


def _no_prev(outputs, b):
    """prev_mask of an image without prompts: all background (every memory sees nothing)."""
    hw = outputs["pred_smasks"].shape[-2:]
    return outputs["pred_smasks"].new_full((1, *hw), -1e4).detach()
