"""FIND's metrics in MMDetection's ``METRICS`` (mmengine ``BaseMetric``).

The computation is the task layer's (:mod:`find_plugin.tasks.metrics`, the same one the detectron2
evaluators run), so both frameworks report the same numbers under the same names. Each metric
reads the detector's ``pred_<key>`` outputs (:mod:`find_plugin.mmdet.detector`) and the pipeline's
``find_gt[<key>]`` (:class:`~find_plugin.mmdet.transforms.FINDSampleTasks`); ``process`` keeps
per-image items on the CPU, mmengine gathers them from every rank, ``compute_metrics`` feeds them
to the metric on rank 0. Results are ``<prefix>/<name>`` (prefix = the task name).

* ``FINDGroundingMetric(task='grounding' | 'interleave')``: cIoU, mIoU, precision@0.5..0.9 (+
  ``*_exact``) of ``pred_grounding_masks`` / ``pred_interleave_masks`` (logits > 0) against
  ``find_gt['grounding_masks' | 'interleave_masks']``;
* ``FINDInteractiveMetric(max_clicks)``: noc@0.5/0.8/0.85/0.9 and miou@iter{k} of
  ``pred_interactive_ious``;
* ``FINDRetrievalMetric(task='retrieval' | 'interleave_retrieval')``: ir@1/5/10, tr@1/5/10 and
  irtr of ``pred_image_embedding`` against ``pred_caption_embeddings`` /
  ``pred_interleave_embeddings`` (hits decided by ``img_id``);
* ``FINDInterleaveRetrievalMetric``: interleave retrieval with visual references (prefix
  ``interleave_retrieval_visual``; :mod:`find_plugin.tasks.interleave_metrics`): ir1/5/10,
  tr1/5/10 of ``pred_interleave_query_embedding`` + ``pred_interleave_entity_embeddings`` (with
  ``pred_interleave_entity_references``, reference image ids, -1 = text entity) against
  ``pred_image_embedding`` + ``pred_object_embeddings``.
"""

from typing import Dict, List, Optional, Sequence

import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

from ..tasks.interleave_metrics import InterleaveRetrievalMetric, check_interleave_outputs
from ..tasks.metrics import GroundingMetric, InteractiveMetric, RetrievalMetric

__all__ = [
    "FINDGroundingMetric",
    "FINDInteractiveMetric",
    "FINDInterleaveRetrievalMetric",
    "FINDRetrievalMetric",
]


def _field(sample: dict, key: str, what: str):
    if key not in sample:
        raise KeyError(
            f"{what}: the data sample of img_id {sample.get('img_id')} has no {key!r} (keys "
            f"{sorted(sample)}); run the FIND task in the model and FINDSampleTasks(training="
            "False) in the evaluation pipeline"
        )
    return sample[key]


@METRICS.register_module()
class FINDGroundingMetric(BaseMetric):
    """Referring / interleave segmentation metric (official grounding evaluator)."""

    keys = {"grounding": "grounding_masks", "interleave": "interleave_masks"}

    def __init__(self, task: str = "grounding", collect_device="cpu", prefix=None):
        if task not in self.keys:
            raise ValueError(f"FINDGroundingMetric: task must be one of {sorted(self.keys)}")
        self.task, self.key = task, self.keys[task]
        super().__init__(collect_device=collect_device, prefix=prefix or task)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # one state per sample: the gathering of mmengine (and the per-dataset slices of
        # MultiDatasetsEvaluator) count results as samples
        for s in data_samples:
            metric = GroundingMetric()
            pred = torch.as_tensor(_field(s, "pred_" + self.key, type(self).__name__))
            gt = _field(s, "find_gt", type(self).__name__)
            if self.key not in gt:
                raise KeyError(f"img_id {s.get('img_id')}: find_gt has no {self.key!r}")
            gt = torch.as_tensor(gt[self.key])
            if pred.shape != gt.shape:
                raise ValueError(
                    f"img_id {s.get('img_id')}: pred_{self.key} {tuple(pred.shape)} and "
                    f"find_gt[{self.key!r}] {tuple(gt.shape)} must both be [n, H0, W0]"
                )
            metric.update(pred > 0.0, gt.to(pred.device))
            self.results.append(metric.state())

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        metric = GroundingMetric.from_states(results)
        return metric.compute()


@METRICS.register_module()
class FINDInteractiveMetric(BaseMetric):
    """Interactive segmentation metric (official interactive evaluator)."""

    def __init__(self, max_clicks: int = 1, collect_device="cpu", prefix=None):
        self.max_clicks = int(max_clicks)
        super().__init__(collect_device=collect_device, prefix=prefix or "interactive")

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            ious = torch.as_tensor(_field(s, "pred_interactive_ious", type(self).__name__))
            if ious.dim() != 2 or ious.shape[1] != self.max_clicks:
                raise ValueError(
                    f"img_id {s.get('img_id')}: pred_interactive_ious must be [N, max_clicks="
                    f"{self.max_clicks}], got {tuple(ious.shape)}"
                )
            self.results.append(ious.detach().cpu())

    def compute_metrics(self, results: List[torch.Tensor]) -> Dict[str, float]:
        metric = InteractiveMetric(max_clicks=self.max_clicks)
        for ious in results:
            metric.update(ious)
        return metric.compute()


@METRICS.register_module()
class FINDRetrievalMetric(BaseMetric):
    """Image-text / interleave-text retrieval metric (official retrieval evaluator)."""

    keys = {"retrieval": "caption_embeddings", "interleave_retrieval": "interleave_embeddings"}

    def __init__(
        self,
        task: str = "retrieval",
        device: Optional[str] = None,
        collect_device="cpu",
        prefix=None,
    ):
        if task not in self.keys:
            raise ValueError(f"FINDRetrievalMetric: task must be one of {sorted(self.keys)}")
        self.task, self.key, self.device = task, self.keys[task], device
        super().__init__(collect_device=collect_device, prefix=prefix or task)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        what = type(self).__name__
        for s in data_samples:
            img = torch.as_tensor(_field(s, "pred_image_embedding", what)).detach().cpu()
            txt = torch.as_tensor(_field(s, "pred_" + self.key, what)).detach().cpu()
            if img.dim() != 1 or txt.dim() != 2 or (txt.shape[0] and txt.shape[1] != img.shape[0]):
                raise ValueError(
                    f"img_id {s.get('img_id')}: pred_image_embedding must be [D] and "
                    f"pred_{self.key} [n, D], got {tuple(img.shape)} and {tuple(txt.shape)}"
                )
            self.results.append((s.get("img_id"), img, txt))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metric = RetrievalMetric()
        codes: Dict[object, int] = {}
        for image_id, img, txt in results:
            code = codes.setdefault(image_id, len(codes))
            metric.update(image_embeds=img[None], image_ids=torch.tensor([code]))
            if txt.shape[0]:
                ids = torch.full((txt.shape[0],), code, dtype=torch.long)
                metric.update(text_embeds=txt, text_ids=ids)
        return metric.compute(device=self.device)


@METRICS.register_module()
class FINDInterleaveRetrievalMetric(BaseMetric):
    """Interleave retrieval with visual references (official ``InterleaveEvaluator``; the
    detectron2 side's ``FINDInterleaveRetrievalEvaluator``). Image ids are coded in order of
    appearance, reference ids with the same codes, so a reference names its gallery image.
    ``chunk``: queries scored per step (memory only)."""

    def __init__(
        self, chunk: int = 16, device: Optional[str] = None, collect_device="cpu", prefix=None
    ):
        self.chunk, self.device = int(chunk), device
        super().__init__(
            collect_device=collect_device, prefix=prefix or "interleave_retrieval_visual"
        )

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        what = type(self).__name__
        for s in data_samples:
            out = [
                torch.as_tensor(_field(s, "pred_" + key, what)).detach().cpu()
                for key in (
                    "image_embedding",
                    "object_embeddings",
                    "interleave_query_embedding",
                    "interleave_entity_embeddings",
                    "interleave_entity_references",
                )
            ]
            img, objs, query, ents, refs = out
            check_interleave_outputs(img, query, ents, f"img_id {s.get('img_id')} (pred_*)")
            self.results.append((s.get("img_id"), img, objs, query, ents, refs.long()))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metric = InterleaveRetrievalMetric(chunk=self.chunk)
        codes: Dict[object, int] = {}
        for image_id, img, objs, query, ents, refs in results:
            code = codes.setdefault(image_id, len(codes))
            metric.update_image(code, img, objs)
            ref_codes = [codes.setdefault(int(r), len(codes)) if r >= 0 else -1 for r in refs]
            metric.update_query(code, query, ents, torch.tensor(ref_codes, dtype=torch.long))
        return metric.compute(device=self.device)
