"""Interactive segmentation evaluator (official ``InteractiveEvaluator``;
``official_evaluators.md`` "Interactive segmentation")."""

from typing import Optional

import torch

from ...tasks.metrics import InteractiveMetric
from .base import FINDMetricEvaluator

__all__ = ["FINDInteractiveEvaluator"]


class FINDInteractiveEvaluator(FINDMetricEvaluator):
    """``noc@0.5``, ``noc@0.8``, ``noc@0.85``, ``noc@0.9`` (mean number of clicks, capped at
    ``max_clicks``) and ``miou@iter{k}`` for k in 1..max_clicks (a fraction in [0, 1], as the
    official evaluator), results under ``"interactive"``
    (:class:`~find_plugin.tasks.metrics.InteractiveMetric`).

    Per image it reads ``output["interactive_ious"]``, float [N, max_clicks]: the IoU of each of
    the image's N prompted instances after each click (the model runs the official click
    simulator and ``interactive_iou``). Every instance of every image weighs the same.
    """

    tasks = {"interactive": "interactive_ious"}

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        *,
        max_clicks: int = 1,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seed: Optional[int] = None,
    ):
        self.max_clicks = int(max_clicks)
        super().__init__(
            dataset_name,
            task="interactive",
            output_dir=output_dir,
            distributed=distributed,
            seed=seed,
        )

    def _new_metric(self):
        return InteractiveMetric(max_clicks=self.max_clicks)

    def _metric_kwargs(self) -> dict:
        return {"max_clicks": self.max_clicks}

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            self._image_id(inp)
            ious = torch.as_tensor(self._output(inp, out))
            if ious.dim() != 2 or ious.shape[1] != self.max_clicks:
                raise ValueError(
                    f"{type(self).__name__}: output 'interactive_ious' of {self._where(inp)} "
                    f"must be [N, max_clicks={self.max_clicks}], got {tuple(ious.shape)}"
                )
            self._metric.update(ious)
