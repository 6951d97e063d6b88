"""FIND's detectron2 dataset mappers (adapters from dataset dicts to the task layer's records).

Registered in :data:`~.registry.FIND_MAPPER_REGISTRY`:

* ``find_panoptic_lsj`` (:class:`FINDPanopticLSJMapper`, training): seeded large-scale jitter
  (spec §4), the panoptic PNG (crowd segments dropped) -> record ``{"image_size", "labels",
  "masks", "captions"}`` at the augmented size -> ``sample_record(training=True)`` of the tasks;
* ``find_panoptic_eval`` (:class:`FINDEvalMapper`): shortest-edge resize, record at the resized
  size -> ``sample_record(training=False)``, ground truth ``find_gt`` at the original size;
* ``find_retrieval_eval`` (:class:`FINDRetrievalEvalMapper`): the same on caption-only data
  (COCO Karpathy); every image must have captions.

Output per image (what ``FIND.forward`` receives, issue 9 contract): the dataset dict's own keys
plus ``"image"`` uint8 [C, H, W] (``image_format``; H, W after augmentation, not batch padded),
``"height"``/``"width"`` (original size), ``"find_samples"`` ({task: sample}), and in training
``"instances"`` (``gt_classes`` [N], ``gt_masks`` [N, H, W] bool, ``gt_boxes``), in evaluation
``"find_gt"``: ``"interactive_masks"`` [N, H0, W0] bool (interactive task; one per segment, in
the order of the interactive sample's prompts) and ``"captions"`` (retrieval task); with
``grounding_info`` (RefCOCO) / ``entity_info`` (FIND-Bench) in the dataset dict, the record also
gets ``groundings`` / ``entities`` and ``find_gt`` ``"grounding_masks"`` / ``"interleave_masks"``
(:mod:`.language`). A dataset dict without a panoptic PNG (RefCOCO alone) trains groundings only.
With the ``interleave_retrieval_visual`` task, the evaluation mapper also reads each cross-image
``reference`` of the first entity sentence: the reference image (resized like a query image) and
its segment mask go into the record; the model embeds them.

Randomness: each call draws from ``mapper_generator(seed, image_id, call count)`` in training and
``mapper_generator(seed, image_id)`` in evaluation (the same numbers on every run). Language: the
mapper calls the ``encode_text`` it is given (the cached frozen encoder from ``from_config``); it
never runs a model of its own.
"""

from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from ...tasks.base import FINDTask, TextEncoderFn
from ...tasks.batch import sample_record
from ..datasets.common import rgb2id
from ..resumable import STREAM_POSITION_KEY
from . import registry as _registry
from .augmentation import FixedResizeShortestEdge, SeededAugInput, build_lsj_augmentations
from .base import image_tensor, read_image, read_panoptic, segment_masks
from .language import entity_entries, grounding_entries
from .registry import mapper_generator, register_find_mapper, tasks_from_cfg

__all__ = ["FINDPanopticLSJMapper", "FINDEvalMapper", "FINDRetrievalEvalMapper"]


def _non_crowd(d) -> list:
    return [s for s in d.get("segments_info", []) if not s.get("iscrowd", 0)]


class _FINDMapper:
    """Shared construction: augmentations, image format, tasks, text encoder, seed (each
    subclass gives its own ``from_config``; ``@configurable`` dispatches to it)."""

    @configurable
    def __init__(
        self,
        *,
        augmentations: Sequence,
        image_format: str,
        tasks: Sequence[FINDTask],
        encode_text: Optional[TextEncoderFn],
        seed: int = 0,
    ):
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: a task is listed twice in {names}")
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.tasks = list(tasks)
        self.task_names = names
        self.encode_text = encode_text
        self.seed = int(seed)
        self._calls = 0  # training: draws are seeded by the stream position, else this count

    def _augment(self, image, generator):
        aug_input = SeededAugInput(image, generator=generator)
        transforms = self.augmentations(aug_input)
        return aug_input.image, transforms

    def _output(self, d, image, original_size) -> dict:
        out = dict(d)
        out.update(image=image_tensor(image), height=original_size[0], width=original_size[1])
        return out

    def __repr__(self):
        return (
            f"{type(self).__name__}(tasks={self.task_names}, format={self.image_format}, "
            f"seed={self.seed}, augmentations={self.augmentations})"
        )


def _add_language_entries(
    record,
    d,
    transforms,
    original_size,
    ids,
    original_ids,
    *,
    training,
    generator,
    read_reference=None,
) -> dict:
    """Add ``groundings`` (from ``grounding_info``) and ``entities`` (from ``entity_info``, read
    in the transformed panoptic id map ``ids``) to ``record``; return the ``find_gt`` entries
    ``grounding_masks`` / ``interleave_masks`` at the original size (evaluation only)."""
    gt = {}
    if "grounding_info" in d:
        record["groundings"], grounding_gt = grounding_entries(
            d, transforms, original_size, training=training, generator=generator
        )
        if not training:
            gt["grounding_masks"] = grounding_gt
    if "entity_info" in d:
        if ids is None:
            raise KeyError(
                f"dataset entry image {d.get('image_id')} ({d.get('file_name')}) has "
                "entity_info but no 'pan_seg_file_name' (entities are panoptic segments)"
            )
        record["entities"], interleave_gt = entity_entries(d, ids, original_ids, read_reference)
        if not training:
            gt["interleave_masks"] = interleave_gt
    return gt


@register_find_mapper("find_panoptic_lsj")
class FINDPanopticLSJMapper(_FINDMapper):
    """Training mapper: seeded LSJ + every task's sample of the augmented panoptic record.

    Args (keyword-only): ``augmentations`` (default from ``from_config``:
    :func:`~.augmentation.build_lsj_augmentations`; any augmentation works, seeded ones draw
    from the per-call generator), ``image_format``, ``tasks`` (FINDTask instances),
    ``encode_text``, ``seed``.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: Optional[str] = None):
        tasks, _ = tasks_from_cfg(cfg, True, dataset_name)
        return {
            "augmentations": build_lsj_augmentations(
                cfg.INPUT.IMAGE_SIZE,
                cfg.INPUT.MIN_SCALE,
                cfg.INPUT.MAX_SCALE,
                cfg.INPUT.RANDOM_FLIP,
            ),
            "image_format": cfg.INPUT.FORMAT,
            "tasks": tasks,
            "encode_text": _registry._build_text_encoder(cfg),
            # detectron2's SEED < 0 means "random"; FIND's mappers stay reproducible: 0
            "seed": max(int(cfg.SEED), 0),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        d = dataset_dict
        image = read_image(d, self.image_format)
        original_size = image.shape[:2]
        # RefCOCO-only data has no panoptic PNG: its record holds groundings only
        pan = read_panoptic(d, original_size) if "pan_seg_file_name" in d else None
        # Position of this item in the training stream when the loader gives it (resumable
        # runs, find_plugin.d2.resumable), else this mapper's own call count.
        count = d.get(STREAM_POSITION_KEY, self._calls)
        generator = mapper_generator(self.seed, d["image_id"], count)
        self._calls += 1
        image, transforms = self._augment(image, generator)
        size = tuple(image.shape[:2])
        ids = rgb2id(transforms.apply_segmentation(pan)) if pan is not None else None
        if ids is not None:
            labels, masks = segment_masks(ids, _non_crowd(d))
        else:
            labels, masks = segment_masks(np.zeros(size, np.int32), [])
        record = {
            "image_size": size,
            "labels": labels,
            "masks": masks,
            "captions": list(d.get("captions", [])),
        }
        _add_language_entries(
            record, d, transforms, original_size, ids, None, training=True, generator=generator
        )
        out = self._output(d, image, original_size)
        out["find_samples"] = sample_record(
            self.tasks, record, generator=generator, encode_text=self.encode_text, training=True
        )
        instances = Instances(size)
        instances.gt_classes = labels
        instances.gt_masks = masks
        instances.gt_boxes = BitMasks(masks).get_bounding_boxes()
        out["instances"] = instances
        return out


@register_find_mapper("find_panoptic_eval")
class FINDEvalMapper(_FINDMapper):
    """Evaluation mapper: deterministic shortest-edge resize; the record holds what the dataset
    dict has (panoptic segments, captions); ``find_gt`` at the original size.

    Args (keyword-only): ``augmentations`` (default ``FixedResizeShortestEdge(MIN_SIZE_TEST,
    MAX_SIZE_TEST)``), ``image_format``, ``tasks``, ``encode_text``, ``seed``
    (``cfg.MODEL.FIND.TEST.SEED``).
    """

    requires_captions = False

    @classmethod
    def from_config(cls, cfg, is_train: bool = False, dataset_name: Optional[str] = None):
        tasks, _ = tasks_from_cfg(cfg, False, dataset_name)
        return {
            "augmentations": [
                FixedResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            ],
            "image_format": cfg.INPUT.FORMAT,
            "tasks": tasks,
            "encode_text": _registry._build_text_encoder(cfg),
            "seed": int(cfg.MODEL.FIND.TEST.SEED),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        d = dataset_dict
        image = read_image(d, self.image_format)
        original_size = image.shape[:2]
        generator = mapper_generator(self.seed, d["image_id"])
        pan = read_panoptic(d, original_size) if "pan_seg_file_name" in d else None
        image, transforms = self._augment(image, generator)
        size = tuple(image.shape[:2])
        record = {"image_size": size}
        gt = {}
        if pan is not None:
            ids = rgb2id(transforms.apply_segmentation(pan))
            # a segment the resize erased cannot be prompted: drop it here so that the record's
            # masks and find_gt's stay one-to-one
            segments = [s for s in _non_crowd(d) if (ids == s["id"]).any()]
            record["labels"], record["masks"] = segment_masks(ids, segments)
            if "interactive" in self.task_names:
                gt["interactive_masks"] = segment_masks(rgb2id(pan), segments)[1]
        captions = list(d.get("captions", []))
        if self.requires_captions and not captions:
            raise ValueError(
                f"dataset entry image {d.get('image_id')} ({d.get('file_name')}) has no "
                "captions; retrieval evaluation needs them"
            )
        record["captions"] = captions
        if "retrieval" in self.task_names:
            gt["captions"] = captions
        gt.update(
            _add_language_entries(
                record,
                d,
                transforms,
                original_size,
                ids if pan is not None else None,
                rgb2id(pan) if pan is not None else None,
                training=False,
                generator=generator,
                read_reference=(
                    self._read_reference
                    if "interleave_retrieval_visual" in self.task_names
                    else None
                ),
            )
        )
        out = self._output(d, image, original_size)
        out["find_samples"] = sample_record(
            self.tasks, record, generator=generator, encode_text=self.encode_text, training=False
        )
        out["find_gt"] = gt
        return out

    def _read_reference(self, ref) -> dict:
        """A phrase's cross-image reference (dataset ``reference`` with ``file_name`` /
        ``pan_seg_file_name``) -> ``{"image": uint8 [C, h, w] resized like a query image,
        "mask": [h, w] bool (its segment), "image_id"}``. The model embeds the image."""
        where = {
            "image_id": ref["image_id"],
            "file_name": ref["file_name"],
            "pan_seg_file_name": ref["pan_seg_file_name"],
            "segments_info": [{"id": ref["annotation_id"]}],  # checked to have pixels
        }
        image = read_image(where, self.image_format)
        pan = read_panoptic(where, image.shape[:2])
        # evaluation resizes are deterministic: this generator draws nothing
        image, transforms = self._augment(image, mapper_generator(self.seed, ref["image_id"]))
        ids = rgb2id(transforms.apply_segmentation(pan))
        return {
            "image": image_tensor(image),
            "mask": torch.from_numpy(ids == ref["annotation_id"]),
            "image_id": int(ref["image_id"]),
        }


@register_find_mapper("find_retrieval_eval")
class FINDRetrievalEvalMapper(FINDEvalMapper):
    """:class:`FINDEvalMapper` for caption-only datasets (COCO Karpathy): captions required."""

    requires_captions = True
