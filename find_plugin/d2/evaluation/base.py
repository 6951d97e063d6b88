"""Shared machinery of the FIND detectron2 evaluators: per-image key checks, gathering metric
*states* (never metric values) to rank 0, and the atomic metrics JSON.

The metric math lives in :mod:`find_plugin.tasks.metrics`; an evaluator only reads the model's
outputs (and the mapper's ``find_gt``) into a metric, gathers ``metric.state()`` of every rank with
``detectron2.utils.comm.gather`` and merges the states on rank 0, in rank order, into a fresh
metric, which computes the same numbers as one metric fed every image.
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ...checkpoint.format import atomic_write

__all__ = ["FINDMetricEvaluator", "write_json_atomic"]

logger = logging.getLogger(__name__)


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (:func:`find_plugin.checkpoint.format.
    atomic_write`): a reader or a killed run never sees a truncated file. NaN is written as
    ``NaN`` (Python's json default), as official metrics can be NaN."""
    text = json.dumps(data, indent=2, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode()))


class FINDMetricEvaluator(DatasetEvaluator):
    """Base of the FIND evaluators: one task key, one metric of :mod:`find_plugin.tasks.metrics`.

    Subclasses set ``tasks`` (task key -> the output key it reads), implement
    :meth:`_new_metric` and ``process``, and may override :meth:`_payload` / :meth:`_merge` when
    a rank's state needs more than ``metric.state()``.

    Args:
        dataset_name: used in messages only (kept for detectron2's evaluator signature).
        task: task key of the results (``{task: {metric: value}}``), one of ``tasks``.
        output_dir: if given, rank 0 also writes the results to
            ``<output_dir>/find_<task>_metrics.json`` (atomically).
        distributed: gather every rank's state to rank 0 (detectron2's convention); if False,
            every rank evaluates only its own images.
        seed: the evaluation seed (``MODEL.FIND.TEST.SEED``) the mapper drew this run's random
            choices from (which phrases are visual, prompt shapes and points); logged with the
            results and written next to them in the JSON (``{"seed": ..., task: {...}}``), so a
            number can be reproduced. None: not recorded.
    """

    tasks: Dict[str, str] = {}

    def __init__(
        self,
        dataset_name: Optional[str] = None,
        *,
        task: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        seed: Optional[int] = None,
    ):
        if task not in self.tasks:
            raise ValueError(
                f"{type(self).__name__}: task must be one of {sorted(self.tasks)}, got {task!r}"
            )
        self.dataset_name = dataset_name
        self.task = task
        self.output_key = self.tasks[task]
        self.output_dir = output_dir
        self.distributed = bool(distributed)
        self.seed = None if seed is None else int(seed)
        self.reset()

    # -- to implement -------------------------------------------------------------------------
    def _new_metric(self):
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self._metric = self._new_metric()

    def _where(self, inp: dict) -> str:
        where = f"image_id {inp.get('image_id')!r}"
        if "file_name" in inp:
            where += f" ({inp['file_name']})"
        if self.dataset_name:
            where += f" of dataset {self.dataset_name!r}"
        return where

    def _image_id(self, inp: dict):
        if "image_id" not in inp:
            raise KeyError(
                f"{type(self).__name__}: an input has no 'image_id' (keys {sorted(inp)}); "
                f"task {self.task!r} needs it"
            )
        return inp["image_id"]

    def _output(self, inp: dict, out: dict, key: Optional[str] = None):
        """``out[key]`` (default: this task's output key), or an error naming key and image."""
        key = key or self.output_key
        if key not in out:
            raise KeyError(
                f"{type(self).__name__} (task {self.task!r}): the model output of "
                f"{self._where(inp)} has no {key!r} (output keys {sorted(out)}); enable the "
                f"{self.task!r} output at test time"
            )
        return out[key]

    def _payload(self) -> Any:
        """What this rank sends to rank 0."""
        return self._metric.state()

    def _merge(self, payloads: List[Any]):
        """A metric holding every rank's items, from the gathered payloads (rank order)."""
        return type(self._metric).from_states(payloads, **self._metric_kwargs())

    def _metric_kwargs(self) -> dict:
        return {}

    def _count(self, metric) -> int:
        """Number of evaluated items (0: nothing to report)."""
        return next(iter(metric.state().values())).shape[0]

    def _compute(self, metric) -> Dict[str, float]:
        return metric.compute()

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """``{task: {metric: value}}`` on rank 0 (and without ``distributed``); ``{}`` on the
        other ranks and when no image was processed (a warning is logged)."""
        payload = self._payload()
        if self.distributed:
            comm.synchronize()
            payloads = comm.gather(payload, dst=0)
            if not comm.is_main_process():
                return {}
        else:
            payloads = [payload]
        metric = self._merge(payloads)
        if self._count(metric) == 0:
            logger.warning(
                "%s: no %r predictions were processed on dataset %r; no results",
                type(self).__name__,
                self.task,
                self.dataset_name,
            )
            return {}
        results = self._compute(metric)
        logger.info(
            "%s results on %s (evaluation seed %s): %s",
            self.task,
            self.dataset_name,
            self.seed,
            results,
        )
        if self.output_dir and comm.is_main_process():
            payload = {self.task: results}
            if self.seed is not None:
                payload["seed"] = self.seed
            write_json_atomic(
                os.path.join(self.output_dir, f"find_{self.task}_metrics.json"), payload
            )
        return {self.task: results}
