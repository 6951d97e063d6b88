"""FIND's data transforms in MMDetection's ``TRANSFORMS`` (mmdet pipeline style).

``FINDSampleTasks`` turns the results of mmdet's loading and geometric transforms into the task
layer's record (:mod:`find_plugin.tasks.base`) and draws every task's sample with
:func:`find_plugin.tasks.sample_record` (prompt simulation, class prompt, captions, cached text
features), from a generator seeded by ``(seed, img_id[, call count])``
(:func:`find_plugin.tasks.record_generator`): the same numbers on every run.
``PackFINDInputs`` is ``PackDetInputs`` that also packs the FIND samples and ground truth.

Record from the results (after ``LoadPanopticAnnotations`` and any resize / flip / crop):

* things: ``gt_masks`` (one mask per non-crowd thing; crowd things are not in it, as mmdet's
  panoptic loader leaves them out) with ``gt_bboxes_labels``; entries with ``gt_ignore_flags``
  are dropped;
* stuff: one mask per stuff class present in ``gt_seg_map`` (255 = void; thing labels skipped);
* ``captions`` (a list of str, e.g. from :class:`~find_plugin.mmdet.datasets.
  FINDCocoPanopticDataset`).

Masks not at ``img_shape`` (the evaluation pipeline loads annotations after ``Resize``, at the
original size, as the metrics want) are resized to it (nearest) for the record; in evaluation the
original-size masks give ``find_gt["interactive_masks"]`` (one per segment, in record order) and
the captions ``find_gt["captions"]``. A segment the resize erases is dropped from both.
"""

from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS

from ..tasks import record_generator, sample_record
from .components import build_find_tasks, resolve_metainfo
from .detector import build_language

__all__ = ["FINDSampleTasks", "PackFINDInputs", "segments_of_results"]

IGNORE_LABEL = 255


def _masks_array(masks) -> np.ndarray:
    """mmdet BitmapMasks / PolygonMasks / array -> [n, h, w] bool."""
    if hasattr(masks, "to_ndarray"):
        return masks.to_ndarray().astype(bool)
    return np.asarray(masks).astype(bool)


def segments_of_results(
    results: Mapping, *, is_thing: Sequence[bool]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(labels [N] int64, masks [N, h, w] bool)`` of the thing instances and stuff regions in
    ``results`` (module docstring), at the size of the loaded masks."""
    labels: List[int] = []
    masks: List[np.ndarray] = []
    shape = None
    if "gt_masks" in results:
        thing = _masks_array(results["gt_masks"])
        shape = thing.shape[1:] if thing.ndim == 3 else None
        lab = np.asarray(results.get("gt_bboxes_labels", np.zeros(0)), dtype=np.int64)
        ignore = np.asarray(results.get("gt_ignore_flags", np.zeros(len(lab))), dtype=bool)
        if len(lab) != len(thing):
            raise ValueError(
                f"img_id {results.get('img_id')}: {len(thing)} gt_masks but {len(lab)} "
                "gt_bboxes_labels"
            )
        for m, c, ign in zip(thing, lab, ignore):
            if not ign:
                labels.append(int(c))
                masks.append(m)
    if results.get("gt_seg_map") is not None:
        sem = np.asarray(results["gt_seg_map"])
        shape = sem.shape
        for c in np.unique(sem).tolist():
            if c == IGNORE_LABEL or c >= len(is_thing) or is_thing[c]:
                continue
            labels.append(int(c))
            masks.append(sem == c)
    if shape is None:
        shape = tuple(results["img_shape"][:2])
    out = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *shape, dtype=torch.bool)
    return torch.tensor(labels, dtype=torch.long), out


def _resize(masks: torch.Tensor, size) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if not len(masks):
        return torch.zeros(0, *size, dtype=torch.bool)
    return F.interpolate(masks[None].float(), size=tuple(size), mode="nearest")[0] > 0.5


@TRANSFORMS.register_module()
class FINDSampleTasks(BaseTransform):
    """Add ``find_samples`` (and, in evaluation, ``find_gt``) to the results.

    Args:
        tasks: ``{task name: options}`` (as the model's ``tasks``) or a list of names, when
            ``task_options`` gives the options; the tasks to sample.
        task_options: ``{name: options}`` to pick from when ``tasks`` is a list of names.
        metainfo: class names (dict or dataset type name), as the model's.
        language: the frozen language model (as the model's ``language``).
        training: training samples (random prompts, class prompt) or evaluation ones.
        seed: seed of every draw (hashed with the image id and, in training, the call count).
    """

    def __init__(
        self,
        *,
        tasks: Union[Mapping, Sequence[str]],
        task_options: Optional[Mapping] = None,
        metainfo: Union[str, Mapping, None] = None,
        language: Optional[Mapping] = None,
        training: bool = True,
        seed: int = 0,
    ):
        if not isinstance(tasks, Mapping):
            options = dict(task_options or {})
            tasks = {name: options.get(name) for name in tasks}
        meta = resolve_metainfo(metainfo)
        self.meta = meta
        self.is_thing = (
            None if meta is None else [c in meta["thing_classes"] for c in meta["classes"]]
        )
        self.tasks = list(
            build_find_tasks(tasks, classes=meta["classes"] if meta else None).values()
        )
        self.names = [t.name for t in self.tasks]
        self.language = dict(language or {})
        self._encode_text = None
        self.training = bool(training)
        self.seed = int(seed)
        self._calls = 0

    @property
    def encode_text(self):
        # Built on first use (in the loader worker), shared per process with the model.
        if self._encode_text is None and self.language:
            self._encode_text = build_language(self.language)
        return self._encode_text

    def transform(self, results: dict) -> dict:
        img_id = results.get("img_id")
        size = tuple(results["img_shape"][:2])
        if self.training:
            generator = record_generator(self.seed, img_id, self._calls)
            self._calls += 1
        else:
            generator = record_generator(self.seed, img_id)
        record = {"image_size": size, "captions": list(results.get("captions", []))}
        gt = {}
        if self.is_thing is not None and ("gt_masks" in results or "gt_seg_map" in results):
            labels, masks = segments_of_results(results, is_thing=self.is_thing)
            moved = _resize(masks, size)
            if not self.training:
                # a segment the resize erased cannot be prompted: keep record and gt one-to-one
                keep = moved.flatten(1).any(1) if len(moved) else torch.zeros(0, dtype=torch.bool)
                labels, masks, moved = labels[keep], masks[keep], moved[keep]
                if "interactive" in self.names:
                    gt["interactive_masks"] = masks
            record["labels"], record["masks"] = labels, moved
        if not self.training and "retrieval" in self.names:
            gt["captions"] = record["captions"]
        results["find_samples"] = sample_record(
            self.tasks,
            record,
            generator=generator,
            encode_text=self.encode_text,
            training=self.training,
        )
        if not self.training:
            results["find_gt"] = gt
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tasks={self.names}, training={self.training}, "
            f"seed={self.seed})"
        )


@TRANSFORMS.register_module()
class PackFINDInputs(PackDetInputs):
    """``PackDetInputs`` plus the data fields ``find_samples`` and ``find_gt`` of
    :class:`FINDSampleTasks` (plain dicts: they stay on the CPU, the model moves what it needs)."""

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        ds = packed["data_samples"]
        for key in ("find_samples", "find_gt"):
            if key in results:
                ds.set_field(results[key], key)
        return packed
