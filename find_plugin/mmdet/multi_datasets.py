"""Several validation sets in one mmengine ``ValLoop``, metrics prefixed per set.

mmengine's ``ValLoop`` has one dataloader and one evaluator. mmdet's answer (GLIP / Grounding-DINO
configs) is a ``ConcatDataset`` of the sets and ``MultiDatasetsEvaluator(metrics,
dataset_prefixes)``: metric ``i`` is computed on the results of dataset ``i`` (the slice
``cumulative_sizes[i-1]:cumulative_sizes[i]`` of the gathered results, which are one per sample in
dataset order) and its names become ``<dataset prefix>/<metric prefix>/<name>``. Two things do not
fit FIND as they are: every metric's ``process`` sees the samples of *every* set (the panoptic
metric would read a retrieval-only sample), and it allows one metric per set (FIND's COCO
val2017 runs five).

:class:`FINDDatasetMetrics` is that one metric per set: it holds the set's metrics and its
dataset index, runs them on the samples of its set only (``find_dataset_index`` in the
metainfo, written by :class:`~find_plugin.mmdet.datasets.FINDConcatDataset`) and stores exactly
one entry per sample (a placeholder for the samples of other sets), so the gathering and slicing
of ``MultiDatasetsEvaluator`` stay valid, distributed included (mmengine's ``collect_results``
restores the sampler order and drops the padded samples at the end). Its names are
``<metric prefix>/<name>``, e.g. ``refcocog_val/grounding/cIoU`` once prefixed::

    val_dataloader = dict(dataset=dict(type='FINDConcatDataset', datasets=[coco_val, refcocog]))
    val_evaluator = dict(
        type='MultiDatasetsEvaluator',
        dataset_prefixes=['coco_val', 'refcocog_val'],
        metrics=[
            dict(type='FINDDatasetMetrics', dataset_index=0, metrics=[...panoptic, retrieval]),
            dict(type='FINDDatasetMetrics', dataset_index=1, metrics=[...grounding]),
        ])

Each set's pipeline decides its tasks (``FINDSampleTasks(tasks=...)``): the model runs the tasks
each sample holds.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Union

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

from .datasets import DATASET_INDEX_KEY

__all__ = ["FINDDatasetMetrics"]

#: the entry stored for a sample of another dataset (not None: mmengine's gathering drops None)
OTHER_DATASET = ()


@METRICS.register_module()
class FINDDatasetMetrics(BaseMetric):
    """The metrics of dataset ``dataset_index`` of a ``FINDConcatDataset``, as one metric of
    mmdet's ``MultiDatasetsEvaluator``.

    Args:
        dataset_index: index of the dataset in ``FINDConcatDataset.datasets``.
        metrics: configs (or instances) of the dataset's metrics; their prefixes must differ.
        collect_device / prefix: as mmengine's ``BaseMetric`` (prefix None: the names are
            ``<metric prefix>/<name>``, under the evaluator's dataset prefix).
    """

    def __init__(
        self,
        dataset_index: int,
        metrics: Union[Mapping, BaseMetric, Sequence],
        collect_device="cpu",
        prefix: Optional[str] = None,
    ):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.dataset_index = int(dataset_index)
        if isinstance(metrics, (Mapping, BaseMetric)):
            metrics = [metrics]
        self.metrics: List[BaseMetric] = [
            m if isinstance(m, BaseMetric) else METRICS.build(m) for m in metrics
        ]
        if not self.metrics:
            raise ValueError(f"FINDDatasetMetrics(dataset_index={dataset_index}): no metrics")
        prefixes = [m.prefix for m in self.metrics]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(
                f"FINDDatasetMetrics(dataset_index={dataset_index}): the metrics' prefixes "
                f"{prefixes} must differ (their names would collide)"
            )

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta) -> None:
        # a ConcatDataset of sets with different metainfo gives the list of all of them
        if isinstance(meta, Sequence) and not isinstance(meta, (str, Mapping)):
            meta = meta[self.dataset_index]
        self._dataset_meta = meta
        for m in self.metrics:
            m.dataset_meta = meta

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            if DATASET_INDEX_KEY not in s:
                raise KeyError(
                    f"FINDDatasetMetrics: the data sample of img_id {s.get('img_id')} has no "
                    f"{DATASET_INDEX_KEY!r}; the validation dataset must be a FINDConcatDataset"
                )
            if int(s[DATASET_INDEX_KEY]) != self.dataset_index:
                self.results.append(OTHER_DATASET)
                continue
            entry = []
            for m in self.metrics:
                n = len(m.results)
                m.process(data_batch, [s])
                entry.append(m.results[n:])
                del m.results[n:]
            self.results.append(entry)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        foreign = sum(1 for r in results if r == OTHER_DATASET)
        if foreign:
            raise ValueError(
                f"FINDDatasetMetrics(dataset_index={self.dataset_index}): {foreign} of the "
                f"{len(results)} results of its slice are samples of another dataset; the "
                "evaluator's dataset_prefixes and metrics must follow FINDConcatDataset.datasets"
            )
        out = {}
        for k, m in enumerate(self.metrics):
            part = [x for r in results for x in r[k]]
            for name, value in m.compute_metrics(part).items():
                out[f"{m.prefix}/{name}" if m.prefix else name] = value
        return out
