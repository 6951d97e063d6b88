"""``FIND`` in detectron2's ``META_ARCH_REGISTRY``: frozen backbone + ``FINDHead`` + the task layer.

Input (detectron2 contract, one dict per image, from a FIND mapper): ``image`` uint8 [3, H, W] in
``cfg.INPUT.FORMAT``; ``height`` / ``width`` (output size, the original image); ``find_samples``
(task name -> that task's sample, :func:`find_plugin.tasks.sample_record`); in evaluation
``find_gt`` (ground truth at the original size, read by the click rounds of interactive
segmentation and by the FIND evaluators).

Training returns detectron2's dict of weighted losses (``loss_mask_ce``, ``loss_mask_ce_0`` ...; see
:class:`~find_plugin.core.criterion.FINDCriterion`) for the tasks of ``MODEL.FIND.TASKS.TRAIN``.
Evaluation returns, per image, what the tasks present in its ``find_samples`` produce:

* ``generic``: ``sem_seg`` [K, H, W], ``panoptic_seg`` (ids [H, W] int32, 0 = void, segments_info
  with contiguous ``category_id``), ``instances`` (``pred_masks``, ``pred_boxes``, ``scores``,
  ``pred_classes``), as Mask2Former;
* ``grounding``: ``grounding_masks`` [G, H, W] logits (foreground > 0), one per sentence;
* ``interleave``: ``interleave_masks`` [E, H, W] logits, one per entity;
* ``interactive``: ``interactive_ious`` [N, max_clicks] (official click rounds against
  ``find_gt["interactive_masks"]``);
* ``retrieval``: ``image_embedding`` [D] and ``caption_embeddings`` [n, D];
* ``interleave_retrieval``: ``image_embedding`` and ``interleave_embeddings`` [n, D];
* ``interleave_retrieval_visual``: see :mod:`find_plugin.task_model` (reference images go through
  :meth:`FIND.extract_one`).
"""

from typing import List, Mapping, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.structures import Boxes, ImageList, Instances

from ..task_model import FINDTaskModel
from .config import build_find_criterion
from .task_registry import FIND_TASK_REGISTRY, build_find_task

__all__ = ["FIND"]


@META_ARCH_REGISTRY.register()
class FIND(FINDTaskModel):
    """Args (keyword-only): those of :class:`~find_plugin.task_model.FINDTaskModel` (parts,
    criterion, tasks, train_tasks, encode_text, is_thing, test, seed) plus
    pixel_mean / pixel_std: per-channel normalisation in ``INPUT.FORMAT`` order;
    size_divisibility: images are padded to a multiple of it.

    Everything but the detectron2 formats (``ImageList``, ``Instances``, the input dicts) lives
    in :class:`~find_plugin.task_model.FINDTaskModel`, shared with the MMDetection detector.
    """

    @configurable
    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size_divisibility = int(size_divisibility)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        head = build_sem_seg_head(cfg, backbone.output_shape())
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None
        tasks = {}
        for name, _ in FIND_TASK_REGISTRY:
            try:
                tasks[name] = build_find_task(name, cfg, meta)
            except KeyError:
                if name in cfg.MODEL.FIND.TASKS.TRAIN:
                    raise
        train = list(cfg.MODEL.FIND.TASKS.TRAIN)
        for name in train:
            if name not in FIND_TASK_REGISTRY:
                build_find_task(name, cfg, meta)  # raises the registry's clear error
        encode_text = None
        if cfg.MODEL.FIND.LANGUAGE.PATH or cfg.MODEL.FIND.LANGUAGE.PACKAGE:
            from .language import build_find_text_encoder

            encode_text = build_find_text_encoder(cfg)
        t, v = cfg.MODEL.FIND.TEST, cfg.MODEL.FIND_VISION
        return {
            "backbone": backbone,
            "pixel_decoder": head.pixel_decoder,
            "interface": head.interface,
            "train_backbone": not v.FREEZE_BACKBONE,
            "train_pixel_decoder": not v.FREEZE_PIXEL_DECODER,
            "criterion": build_find_criterion(
                cfg,
                num_classes=tasks["generic"].num_classes if "generic" in tasks else 1,
                tasks=[tasks[n] for n in train],
            ),
            "tasks": tasks,
            "train_tasks": train,
            "encode_text": encode_text,
            "is_thing": _is_thing(meta),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": cfg.MODEL.FIND.SIZE_DIVISIBILITY,
            "test": {
                "semantic_on": t.SEMANTIC_ON,
                "panoptic_on": t.PANOPTIC_ON,
                "instance_on": t.INSTANCE_ON,
                "object_mask_threshold": t.OBJECT_MASK_THRESHOLD,
                "overlap_threshold": t.OVERLAP_THRESHOLD,
                "top_k": t.DETECTIONS_PER_IMAGE,
                "max_clicks": t.INTERACTIVE_MAX_CLICKS,
                "interleave_official": t.INTERLEAVE_OFFICIAL_RESIZE,
                "class_template": cfg.MODEL.FIND.TASKS.CLASS_EVAL_TEMPLATE,
                "seed": t.SEED,
            },
            "seed": cfg.SEED if cfg.SEED >= 0 else 0,
            "backbone_cache_size": v.BACKBONE_CACHE_SIZE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: Sequence[Mapping]) -> ImageList:
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    def extract_one(self, image: torch.Tensor):
        """Vision features of one uint8 image [C, H, W] (``INPUT.FORMAT``): ``(multi-scale
        features, mask_features, padded size)``, normalised and padded like a batch."""
        images = ImageList.from_tensors(
            [(image.to(self.device).float() - self.pixel_mean) / self.pixel_std],
            self.size_divisibility,
        )
        vision = self.extract_features(images.tensor)
        padded = tuple(images.tensor.shape[-2:])
        return vision["multi_scale_features"], vision["mask_features"], padded

    def forward(self, batched_inputs: List[Mapping]):
        images = self.preprocess(batched_inputs)
        feats, mask_features = self.vision_features(images.tensor)
        per_image = _find_samples(batched_inputs)
        padded = tuple(images.tensor.shape[-2:])
        if self.training:
            return self.compute_losses(per_image, padded, feats, mask_features)
        output_sizes = [
            (x.get("height", s[0]), x.get("width", s[1]))
            for x, s in zip(batched_inputs, images.image_sizes)
        ]
        results = self.predict_tasks(
            per_image,
            padded_size=padded,
            image_sizes=[tuple(s) for s in images.image_sizes],
            output_sizes=output_sizes,
            feats=feats,
            mask_features=mask_features,
            find_gts=[x.get("find_gt", {}) for x in batched_inputs],
            image_ids=[x.get("image_id") for x in batched_inputs],
        )
        for r, size in zip(results, output_sizes):
            if "instances" in r:
                r["instances"] = _instances(r["instances"], size)
        return results


def _find_samples(batched_inputs) -> List[Mapping]:
    per_image = []
    for i, x in enumerate(batched_inputs):
        if "find_samples" not in x:
            raise KeyError(
                f"input {i} (image_id {x.get('image_id')}) has no 'find_samples': use a FIND "
                "dataset mapper (cfg.INPUT.DATASET_MAPPER_NAME)"
            )
        per_image.append(x["find_samples"])
    return per_image


def _instances(res: Mapping, output_size) -> Instances:
    inst = Instances(tuple(output_size))
    inst.pred_masks = res["pred_masks"]
    inst.pred_boxes = Boxes(res["pred_boxes"])
    inst.scores = res["scores"]
    inst.pred_classes = res["pred_classes"]
    return inst


def _is_thing(meta) -> Optional[List[bool]]:
    """K booleans over the contiguous classes (thing = a value of thing_dataset_id_to_contiguous_id
    for panoptic metadata; every class for instance-only metadata)."""
    if meta is None:
        return None
    stuff = getattr(meta, "stuff_classes", None)
    thing_map = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    if stuff and thing_map:
        things = set(thing_map.values())
        return [c in things for c in range(len(stuff))]
    things = getattr(meta, "thing_classes", None)
    return [True] * len(things) if things else None
