"""FIND's datasets in MMDetection's ``DATASETS``.

``FINDCocoPanopticDataset`` is mmdet's ``CocoPanopticDataset`` (same files, same ``data_info``,
same ``CocoPanopticMetric``) joined per image (by image id) with, as the detectron2 side's
``register_find_dataset`` does (the parsing is the framework-free :mod:`find_plugin.data`):

* ``captions`` (``caption_ann_file``, ``annotations/captions_*.json``): what the retrieval task
  and the caption-grounding of training read;
* ``grounding_info`` (``refs_file`` + ``refs_instances_file`` + ``refs_split``: a RefCOCO-style
  ``refs(*).p`` pickle and its ``instances.json``): list of ``{"ref_id", "ann_id",
  "category_id", "sentences": [str], "segmentation"}``, ``[]`` for an image without refs;
* ``entity_info`` (``entity_ann_file``: a FIND-Bench entity file): list of ``{"sentence",
  "phrases": [{"start", "end", "annotation_id", "phrase"}]}`` whose ``annotation_id`` is a
  panoptic segment id of the image, ``[]`` for an image without sentences.

A ref or a sentence of an image outside the panoptic json is an error naming the file and the
image (nothing is dropped silently). :class:`~find_plugin.mmdet.transforms.FINDLoadTaskMasks` and
:class:`~find_plugin.mmdet.transforms.FINDSampleTasks` turn the joined entries into the task
records.
"""

import os.path as osp
from typing import List, Optional

from mmdet.datasets import CocoPanopticDataset
from mmdet.registry import DATASETS

from ..data import (
    check_images_joined,
    load_captions,
    load_grounding_info,
    parse_entity_annotations,
    read_json,
)

__all__ = ["FINDCocoPanopticDataset"]


@DATASETS.register_module()
class FINDCocoPanopticDataset(CocoPanopticDataset):
    """``CocoPanopticDataset`` + captions, RefCOCO-style refs and FIND-Bench entity sentences.

    Args:
        caption_ann_file: COCO captions json (relative to ``data_root`` like ``ann_file``);
            None = no captions (every image gets ``[]``).
        require_captions: raise for an image without captions (retrieval evaluation).
        refs_file: RefCOCO-style ``refs(*).p`` (relative to ``data_root``); None = no refs.
        refs_instances_file: the ``instances.json`` of ``refs_file`` (ref masks).
        refs_split: the refs' ``split`` to join (``'train'``, ``'val'``, ...).
        entity_ann_file: FIND-Bench entity file (relative to ``data_root``); None = none.
        **kwargs: those of ``CocoPanopticDataset``.
    """

    def __init__(
        self,
        *args,
        caption_ann_file: Optional[str] = None,
        require_captions=False,
        refs_file: Optional[str] = None,
        refs_instances_file: Optional[str] = None,
        refs_split: Optional[str] = None,
        entity_ann_file: Optional[str] = None,
        **kwargs,
    ):
        self.caption_ann_file = caption_ann_file
        self.require_captions = bool(require_captions)
        self.refs_file = refs_file
        self.refs_instances_file = refs_instances_file
        self.refs_split = refs_split
        self.entity_ann_file = entity_ann_file
        if refs_file and not (refs_instances_file and refs_split):
            raise ValueError(
                f"{type(self).__name__}: refs_file {refs_file!r} needs refs_instances_file (its "
                "instances.json) and refs_split (e.g. 'train')"
            )
        super().__init__(*args, **kwargs)

    def _join(self, path: str) -> str:
        root = self.data_root or ""
        return path if osp.isabs(path) or not root else osp.join(root, path)

    @property
    def _name(self) -> str:
        return f"{type(self).__name__}({self.ann_file})"

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        by_id = {int(info["img_id"]): info for info in data_list}
        captions = {}
        if self.caption_ann_file:
            path = self._join(self.caption_ann_file)
            captions = load_captions(path, dataset_name=self._name)
        for info in data_list:
            caps = list(captions.get(int(info["img_id"]), []))
            if self.require_captions and not caps:
                raise ValueError(
                    f"image {info['img_id']} ({info['img_path']}) has no caption in "
                    f"{self.caption_ann_file}; retrieval evaluation needs them"
                )
            info["captions"] = caps
        if self.refs_file:
            refs = self._join(self.refs_file)
            per_image, _ = load_grounding_info(
                self._name, refs, self._join(self.refs_instances_file), self.refs_split
            )
            check_images_joined(self._name, refs, per_image, by_id, self.ann_file)
            for i, info in by_id.items():
                info["grounding_info"] = list(per_image.get(i, []))
        if self.entity_ann_file:
            path = self._join(self.entity_ann_file)
            data = read_json(path, dataset_name=self._name, what="FIND-Bench entity file")
            segment_ids = {
                i: {int(s["id"]) for s in info.get("segments_info", [])}
                for i, info in by_id.items()
            }
            # names a sentence of an image outside the panoptic json
            entities = parse_entity_annotations(path, data, segment_ids, dataset_name=self._name)
            for i, info in by_id.items():
                info["entity_info"] = list(entities.get(i, []))
        return data_list
