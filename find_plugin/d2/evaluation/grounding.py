"""Referring / grounding and interleave segmentation evaluator (official ``GroundingEvaluator``;
``official_evaluators.md`` "Grounding, referring and interleave segmentation")."""

from typing import Optional

import torch

from ...tasks.metrics import GroundingMetric
from .base import FINDMetricEvaluator

__all__ = ["FINDGroundingEvaluator"]


class FINDGroundingEvaluator(FINDMetricEvaluator):
    """cIoU, mIoU and precision@0.5..0.9 of one mask per phrase, as the official evaluator, plus
    the corrected ``cIoU_exact``, ``mIoU_exact``, ``precision@t_exact``
    (:class:`~find_plugin.tasks.metrics.GroundingMetric`). All are percentages.

    Per image it reads the model output ``output[key]``, float logits [n, H0, W0] at the original
    image size (foreground = logit > 0, strict), and the mapper's ground truth
    ``input["find_gt"][key]``, bool [n, H0, W0] (nonzero = foreground), where ``key`` is
    ``"grounding_masks"`` for ``task="grounding"`` (results under ``"grounding"``) and
    ``"interleave_masks"`` for ``task="interleave"`` (results under ``"interleave"``). An image
    with n = 0 phrases adds nothing; every phrase of every image weighs the same in mIoU and
    precision (cIoU weighs pixels).
    """

    tasks = {"grounding": "grounding_masks", "interleave": "interleave_masks"}

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        *,
        task: str = "grounding",
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seed: Optional[int] = None,
    ):
        super().__init__(
            dataset_name, task=task, output_dir=output_dir, distributed=distributed, seed=seed
        )

    def _new_metric(self):
        return GroundingMetric()

    def process(self, inputs, outputs) -> None:
        key = self.output_key
        for inp, out in zip(inputs, outputs):
            self._image_id(inp)
            pred = self._output(inp, out)
            gt_all = inp.get("find_gt")
            if not isinstance(gt_all, dict) or key not in gt_all:
                got = sorted(gt_all) if isinstance(gt_all, dict) else type(gt_all).__name__
                raise KeyError(
                    f"{type(self).__name__} (task {self.task!r}): input of {self._where(inp)} "
                    f"needs ground truth input['find_gt'][{key!r}] [n, H0, W0] (the evaluation "
                    f"mapper's), got find_gt {got}"
                )
            pred, gt = torch.as_tensor(pred), torch.as_tensor(gt_all[key])
            if pred.dim() != 3 or pred.shape != gt.shape:
                raise ValueError(
                    f"{type(self).__name__} (task {self.task!r}): output {key!r} "
                    f"{tuple(pred.shape)} and input['find_gt'][{key!r}] {tuple(gt.shape)} of "
                    f"{self._where(inp)} must both be [n, H0, W0] at the original image size"
                )
            # Threshold on the model's device, accumulate two integers per mask on CPU.
            self._metric.update(pred > 0.0, gt.to(pred.device))
