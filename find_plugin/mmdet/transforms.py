"""FIND's data transforms in MMDetection's ``TRANSFORMS`` (mmdet pipeline style).

``FINDSampleTasks`` turns the results of mmdet's loading and geometric transforms into the task
layer's record (:mod:`find_plugin.tasks.base`) and draws every task's sample with
:func:`find_plugin.tasks.sample_record` (prompt simulation, class prompt, captions, cached text
features), from a generator seeded by ``(seed, img_id[, call count])``
(:func:`find_plugin.tasks.record_generator`): the same numbers on every run.
``PackFINDInputs`` is ``PackDetInputs`` that also packs the FIND samples and ground truth.
``FINDLoadTaskMasks`` (right after ``LoadPanopticAnnotations``) adds the masks of the grounding
refs and of the entity phrases to ``gt_masks`` so that mmdet's geometric transforms move them
exactly as the panoptic masks.

Record from the results (after ``LoadPanopticAnnotations`` and any resize / flip / crop):

* things: ``gt_masks`` (one mask per non-crowd thing; crowd things are not in it, as mmdet's
  panoptic loader leaves them out) with ``gt_bboxes_labels``; entries with ``gt_ignore_flags``
  are dropped;
* stuff: one mask per stuff class present in ``gt_seg_map`` (255 = void; thing labels skipped);
* ``captions`` (a list of str, e.g. from :class:`~find_plugin.mmdet.datasets.
  FINDCocoPanopticDataset`);
* ``groundings`` / ``entities`` from the dataset's ``grounding_info`` / ``entity_info`` with the
  masks of :class:`FINDLoadTaskMasks` (:mod:`find_plugin.data.records`, shared with the
  detectron2 mappers): a ref or phrase whose mask a crop removed gets an empty mask, as on the
  detectron2 side.

Masks not at ``img_shape`` (the evaluation pipeline loads annotations after ``Resize``, at the
original size, as the metrics want) are resized to it (nearest) for the record; in evaluation the
original-size masks give ``find_gt["interactive_masks"]`` (one per segment, in record order),
``find_gt["grounding_masks"]`` (one per grounding entry), ``find_gt["interleave_masks"]`` (the
phrases of the first sentence) and the captions ``find_gt["captions"]``. A segment the resize
erases is dropped from the interactive record and ground truth.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform, Compose
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks
from mmengine.fileio import get

from ..data import (
    decode_grounding_masks,
    entity_records,
    entity_segment_ids,
    grounding_records,
    interleave_ground_truth,
    rgb2id,
)
from ..tasks import record_generator, sample_record
from .components import build_find_tasks, resolve_metainfo
from .detector import build_language

__all__ = ["FINDLoadTaskMasks", "FINDSampleTasks", "PackFINDInputs", "segments_of_results"]

IGNORE_LABEL = 255
#: results key of FINDLoadTaskMasks: ("grounding", ref index) / ("entity", segment id) per extra
TASK_MASK_KEYS = "find_task_mask_keys"
_GT_KEYS = ("gt_bboxes", "gt_bboxes_labels", "gt_ignore_flags")


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


def _mask_shape(results: Mapping, size) -> Tuple[int, int]:
    """(h, w) of the loaded masks (``gt_seg_map`` / ``gt_masks``), else ``size``."""
    if results.get("gt_seg_map") is not None:
        return tuple(np.asarray(results["gt_seg_map"]).shape[:2])
    if "gt_masks" in results:
        m = results["gt_masks"]
        return (int(m.height), int(m.width))
    return tuple(size)


def _resize(masks: torch.Tensor, size) -> torch.Tensor:
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if not len(masks):
        return torch.zeros(0, *size, dtype=torch.bool)
    return F.interpolate(masks[None].float(), size=tuple(size), mode="nearest")[0] > 0.5


@TRANSFORMS.register_module()
class FINDLoadTaskMasks(BaseTransform):
    """Append the masks of the language tasks to ``gt_masks`` (place it right after
    ``LoadPanopticAnnotations``, before any geometric transform).

    Each ref of ``grounding_info`` (decoded at ``ori_shape``) and each panoptic segment an
    ``entity_info`` phrase names (read from the panoptic PNG ``seg_map_path``) becomes one more
    ``gt_masks`` entry with its box, ``gt_ignore_flags`` True and the label ``-1 - k`` (k = its
    index in ``results['find_task_mask_keys']``: ``("grounding", ref index)`` or ``("entity",
    segment id)``). Resize, flip and crop then move (or drop) them with the panoptic masks;
    :class:`FINDSampleTasks` takes them out again. Nothing is added to an image without refs or
    sentences.

    Args:
        backend_args: file backend arguments to read the panoptic PNG (as mmdet's loaders).
    """

    def __init__(self, backend_args: Optional[dict] = None):
        self.backend_args = backend_args

    def _panoptic_ids(self, results: dict) -> np.ndarray:
        path = results.get("seg_map_path")
        if path is None:
            raise KeyError(
                f"img_id {results.get('img_id')} has entity_info but no 'seg_map_path' (entity "
                "phrases are panoptic segments)"
            )
        png = mmcv.imfrombytes(get(path, backend_args=self.backend_args), flag="color")
        return rgb2id(png[..., ::-1])  # BGR -> RGB

    def transform(self, results: dict) -> dict:
        h, w = results["ori_shape"][:2]
        keys, masks = [], []
        refs = results.get("grounding_info") or []
        if refs:
            where = f"img_id {results.get('img_id')} ({results.get('img_path')})"
            masks += list(decode_grounding_masks(refs, h, w, where=where))
            keys += [("grounding", k) for k in range(len(refs))]
        sids = entity_segment_ids(results.get("entity_info") or [])
        if sids:
            ids = self._panoptic_ids(results)
            if ids.shape != (h, w):
                raise ValueError(
                    f"img_id {results.get('img_id')}: panoptic PNG {results['seg_map_path']} is "
                    f"{ids.shape}, the image {(h, w)}"
                )
            masks += [ids == sid for sid in sids]
            keys += [("entity", sid) for sid in sids]
        results[TASK_MASK_KEYS] = keys
        if not keys:
            return results
        missing = [k for k in ("gt_masks",) + _GT_KEYS if k not in results]
        if len(missing) == 1 + len(_GT_KEYS) and "gt_seg_map" not in results:
            # no annotation loaded (a refs-only dataset, FINDRefCocoDataset): start empty ones
            results.update(_empty_gt(h, w))
            missing = []
        if missing:
            raise KeyError(
                f"FINDLoadTaskMasks: results lack {missing}; place it after "
                "LoadPanopticAnnotations(with_bbox=True, with_mask=True)"
            )
        extra = BitmapMasks(np.stack(masks).astype(np.uint8), h, w)
        gt = results["gt_bboxes"]
        boxes = extra.get_bboxes(dst_type=type(gt))
        results["gt_masks"] = type(results["gt_masks"]).cat([results["gt_masks"], extra])
        results["gt_bboxes"] = type(gt).cat([gt, boxes.to(gt.device)])
        codes = -1 - np.arange(len(keys), dtype=np.int64)
        results["gt_bboxes_labels"] = np.concatenate([results["gt_bboxes_labels"], codes])
        flags = np.ones(len(keys), dtype=bool)
        results["gt_ignore_flags"] = np.concatenate([results["gt_ignore_flags"], flags])
        return results


def _empty_gt(h: int, w: int) -> dict:
    """The ``gt_*`` fields of mmdet's loaders for an image without an annotation."""
    return {
        "gt_masks": BitmapMasks(np.zeros((0, h, w), dtype=np.uint8), h, w),
        "gt_bboxes": HorizontalBoxes(torch.zeros(0, 4)),
        "gt_bboxes_labels": np.zeros(0, dtype=np.int64),
        "gt_ignore_flags": np.zeros(0, dtype=bool),
    }


def pop_task_masks(results: dict) -> Optional[Dict[tuple, torch.Tensor]]:
    """Take the entries of :class:`FINDLoadTaskMasks` out of ``results``' ``gt_*`` fields;
    return ``{key: [h, w] bool}`` of those that are left (a crop may drop some), or None when
    :class:`FINDLoadTaskMasks` did not run."""
    if TASK_MASK_KEYS not in results:
        return None
    keys = results.pop(TASK_MASK_KEYS)
    if not keys or "gt_bboxes_labels" not in results:
        return {}
    labels = np.asarray(results["gt_bboxes_labels"])
    extra = labels < 0
    out = {}
    if extra.any():
        masks = _masks_array(results["gt_masks"][np.flatnonzero(extra)])
        for code, m in zip(labels[extra].tolist(), masks):
            out[keys[-1 - code]] = torch.from_numpy(np.ascontiguousarray(m))
    keep = np.flatnonzero(~extra)
    results["gt_masks"] = results["gt_masks"][keep]
    for k in _GT_KEYS:
        results[k] = results[k][keep]
    return out


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
        reference_pipeline: transforms that load and resize a reference image as the query
            image is (e.g. ``LoadImageFromFile`` + the same ``Resize``); needed by
            ``interleave_retrieval_visual``, whose visual phrases are prompted by a segment of
            another image (the phrase's ``reference``: its image and panoptic PNG are read, the
            segment's mask resized to the image, record ``reference`` ``{"image": uint8 [3, h, w]
            BGR, "mask": [h, w] bool, "image_id"}``).
        backend_args: file backend arguments of the reference panoptic PNGs.
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
        reference_pipeline: Optional[Sequence[dict]] = None,
        backend_args: Optional[dict] = None,
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
        self.backend_args = backend_args
        self.read_reference = None
        if "interleave_retrieval_visual" in self.names:
            if self.training or not reference_pipeline:
                raise ValueError(
                    "FINDSampleTasks: interleave_retrieval_visual is evaluation-only "
                    "(training=False) and needs reference_pipeline (e.g. [dict(type="
                    "'LoadImageFromFile'), dict(type='Resize', ...)] as the query image's)"
                )
            self.reference_pipeline = Compose(
                [TRANSFORMS.build(t) if isinstance(t, Mapping) else t for t in reference_pipeline]
            )
            self.read_reference = self._read_reference

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
        task_masks = pop_task_masks(results)
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
        self._language_entries(results, record, gt, task_masks, generator)
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

    def _language_entries(self, results, record, gt, task_masks, generator) -> None:
        """``groundings`` / ``entities`` of the record (transformed size) and, in evaluation,
        ``grounding_masks`` / ``interleave_masks`` of ``gt`` (size of the loaded masks: the
        original one in the evaluation pipeline)."""
        size = tuple(record["image_size"])
        if task_masks is None:
            if results.get("grounding_info") or results.get("entity_info"):
                raise KeyError(
                    f"img_id {results.get('img_id')} has grounding_info / entity_info but the "
                    "pipeline did not run FINDLoadTaskMasks: add dict(type='FINDLoadTaskMasks') "
                    "right after LoadPanopticAnnotations"
                )
            task_masks = {}
        # size of the loaded (and transformed) masks: the ground truth's in evaluation
        shape = _mask_shape(results, size)

        def moved(key) -> torch.Tensor:
            m = task_masks.get(key)
            m = torch.zeros(shape, dtype=torch.bool) if m is None else m
            return _resize(m[None], size)[0]

        def original(key) -> torch.Tensor:
            m = task_masks.get(key)
            return torch.zeros(shape, dtype=torch.bool) if m is None else m

        refs = results.get("grounding_info")
        if refs is not None:
            keys = [("grounding", k) for k in range(len(refs))]
            record["groundings"], grounding_gt = grounding_records(
                refs,
                [moved(k) for k in keys],
                None if self.training else [original(k) for k in keys],
                training=self.training,
                generator=generator,
                original_size=shape,
            )
            if not self.training:
                gt["grounding_masks"] = grounding_gt
        entities = results.get("entity_info")
        if entities is not None:
            record["entities"] = entity_records(
                entities, lambda sid: moved(("entity", sid)), self.read_reference
            )
            if not self.training:
                gt["interleave_masks"] = interleave_ground_truth(
                    entities, lambda sid: original(("entity", sid)), shape
                )

    def _read_reference(self, ref: Mapping) -> dict:
        """A phrase's cross-image ``reference`` (``image_id``, ``annotation_id``, ``img_path``,
        ``seg_map_path`` of :class:`~find_plugin.mmdet.datasets.FINDCocoPanopticDataset`) ->
        the record's ``{"image", "mask", "image_id"}``; the model embeds the image."""
        for key in ("img_path", "seg_map_path"):
            if key not in ref:
                raise KeyError(
                    f"reference {dict(ref)} has no {key!r}: the dataset must be a "
                    "FINDCocoPanopticDataset whose panoptic json holds the reference image"
                )
        out = self.reference_pipeline({"img_path": ref["img_path"], "img_id": int(ref["image_id"])})
        img = out["img"]
        png = mmcv.imfrombytes(get(ref["seg_map_path"], backend_args=self.backend_args))
        ids = torch.from_numpy(rgb2id(png[..., ::-1]) == int(ref["annotation_id"]))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "mask": _resize(ids[None], img.shape[:2])[0],
            "image_id": int(ref["image_id"]),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tasks={self.names}, training={self.training}, "
            f"seed={self.seed})"
        )


@TRANSFORMS.register_module()
class PackFINDInputs(PackDetInputs):
    """``PackDetInputs`` plus the data fields ``find_samples`` and ``find_gt`` of
    :class:`FINDSampleTasks` (plain dicts: they stay on the CPU, the model moves what it needs).
    In evaluation, ``find_gt["grounding_masks"]`` [G, H0, W0] is also the metainfo ``gt_masks``
    (``BitmapMasks``, one per referring sentence), as mmdet's RefCOCO pipelines pack it for
    ``RefSegMetric``."""

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        ds = packed["data_samples"]
        for key in ("find_samples", "find_gt"):
            if key in results:
                ds.set_field(results[key], key)
        grounding = results.get("find_gt", {}).get("grounding_masks")
        if grounding is not None:
            g = torch.as_tensor(grounding).bool().numpy().astype(np.uint8)
            h, w = g.shape[-2:]
            ds.set_metainfo({"gt_masks": BitmapMasks(g.reshape(-1, h, w), h, w)})
        return packed
