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
  panoptic segment id of the image, ``[]`` for an image without sentences. A phrase's
  cross-image ``reference`` (the ``interleave_*`` files of ``tools/build_interleave_references.py``)
  gets the ``img_path`` / ``seg_map_path`` of its image (interleave retrieval with visual
  references reads them, :class:`~find_plugin.mmdet.transforms.FINDSampleTasks`).

A ref or a sentence of an image outside the panoptic json is an error naming the file and the
image (nothing is dropped silently). ``images_with`` keeps only the images that have captions /
refs / entity sentences (the evaluation galleries of the detectron2 side: COCO-Entity evaluates
only the images with a sentence).

Evaluation-only sets without panoptic annotations (as the detectron2 side's):

* ``FINDRefCocoDataset``: the images of a RefCOCO-style split with their ``grounding_info``
  (:func:`find_plugin.data.load_find_refcoco`; RefCOCOg umd val evaluates referring segmentation);
* ``FINDKarpathyDataset``: the images of a Karpathy split with their ``captions``
  (:func:`find_plugin.data.load_karpathy_json`; image-text retrieval).

``FINDConcatDataset`` is mmdet's ``ConcatDataset`` that writes the index of each sample's dataset
into its metainfo (``find_dataset_index``), so that
:class:`~find_plugin.mmdet.multi_datasets.FINDDatasetMetrics` under mmdet's
``MultiDatasetsEvaluator`` gives each dataset only its own samples (several validation sets in
one ``ValLoop``, metrics prefixed per dataset).

:class:`~find_plugin.mmdet.transforms.FINDLoadTaskMasks` and
:class:`~find_plugin.mmdet.transforms.FINDSampleTasks` turn the joined entries into the task
records.
"""

import os.path as osp
from typing import List, Optional, Sequence

from mmdet.datasets import CocoPanopticDataset, ConcatDataset
from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset

from ..data import (
    check_images_joined,
    load_captions,
    load_find_refcoco,
    load_grounding_info,
    load_karpathy_json,
    parse_entity_annotations,
    read_json,
)

__all__ = [
    "DATASET_INDEX_KEY",
    "FINDCocoPanopticDataset",
    "FINDConcatDataset",
    "FINDKarpathyDataset",
    "FINDRefCocoDataset",
]

#: metainfo key of a data sample of :class:`FINDConcatDataset`: index of its dataset
DATASET_INDEX_KEY = "find_dataset_index"
_JOINED = ("captions", "grounding_info", "entity_info")


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
        images_with: None, or ``'captions'`` / ``'grounding_info'`` / ``'entity_info'``: keep
            only the images with at least one such entry (an evaluation gallery).
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
        images_with: Optional[str] = None,
        **kwargs,
    ):
        if images_with is not None and images_with not in _JOINED:
            raise ValueError(
                f"{type(self).__name__}: images_with must be None or one of {_JOINED}, got "
                f"{images_with!r}"
            )
        self.images_with = images_with
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
            for sentences in entities.values():
                for e in sentences:
                    for p in e["phrases"]:
                        if "reference" in p:  # checked: a segment of another image of the json
                            ref = by_id[int(p["reference"]["image_id"])]
                            p["reference"]["img_path"] = ref["img_path"]
                            p["reference"]["seg_map_path"] = ref["seg_map_path"]
        if self.images_with:
            data_list = [info for info in data_list if info.get(self.images_with)]
            if not data_list:
                raise ValueError(f"{self._name}: no image has {self.images_with}")
        return data_list


@DATASETS.register_module()
class FINDRefCocoDataset(BaseDataset):
    """The images of one split of a RefCOCO-style ``refs(*).p`` with their ``grounding_info``
    (no panoptic annotation: evaluate referring segmentation only; pipeline ``LoadImageFromFile``,
    ``Resize``, ``FINDLoadTaskMasks``, ``FINDSampleTasks(tasks=['grounding'])``, ...).

    Args:
        ann_file: the ``refs(*).p`` pickle (relative to ``data_root``).
        instances_file: its ``instances.json`` (ref masks, image sizes).
        split: the refs' ``split`` (``'val'``, ``'test'``, ...).
        data_prefix: ``dict(img=<the coco folder>)``: images are ``train2014/<2014 name>``, else
            ``{train,val}2017/<id:012d>.jpg`` under it.
        **kwargs: those of mmengine's ``BaseDataset``.
    """

    def __init__(self, *args, instances_file: str, split: str, **kwargs):
        self.instances_file, self.split = instances_file, split
        kwargs.setdefault("data_prefix", dict(img=""))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root or ""
        inst = self.instances_file
        inst = inst if osp.isabs(inst) or not root else osp.join(root, inst)
        name = f"{type(self).__name__}({self.ann_file}, split {self.split!r})"
        entries = load_find_refcoco(name, self.ann_file, inst, self.data_prefix["img"], self.split)
        return [
            {
                "img_path": e["file_name"],
                "img_id": e["image_id"],
                "height": e["height"],
                "width": e["width"],
                "grounding_info": e["grounding_info"],
            }
            for e in entries
        ]


@DATASETS.register_module()
class FINDKarpathyDataset(BaseDataset):
    """The images of Karpathy split(s) (``dataset_coco.json``) with their ``captions`` (no
    annotation: evaluate image-text retrieval only; pipeline ``LoadImageFromFile``, ``Resize``,
    ``FINDSampleTasks(tasks=['retrieval'])``, ``PackFINDInputs``).

    Args:
        ann_file: Karpathy's split file (relative to ``data_root``).
        splits: the Karpathy splits to keep (default ``('test',)``).
        data_prefix: ``dict(img=<the coco folder>)``: images are ``<filepath>/<filename>``,
            else ``{val,train}2017/<cocoid:012d>.jpg`` under it.
        **kwargs: those of mmengine's ``BaseDataset``.
    """

    def __init__(self, *args, splits: Sequence[str] = ("test",), **kwargs):
        self.splits = tuple(splits)
        kwargs.setdefault("data_prefix", dict(img=""))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        name = f"{type(self).__name__}({self.ann_file}, splits {list(self.splits)})"
        entries = load_karpathy_json(name, self.ann_file, self.data_prefix["img"], self.splits)
        return [
            {"img_path": e["file_name"], "img_id": e["image_id"], "captions": e["captions"]}
            for e in entries
        ]


@DATASETS.register_module()
class FINDConcatDataset(ConcatDataset):
    """mmdet's ``ConcatDataset`` whose samples carry their dataset's index in the metainfo
    (``DATASET_INDEX_KEY``), read by :class:`~find_plugin.mmdet.multi_datasets.
    FINDDatasetMetrics`."""

    def __getitem__(self, idx: int) -> dict:
        data = super().__getitem__(idx)
        index, _ = self._get_ori_dataset_idx(idx)
        data["data_samples"].set_metainfo({DATASET_INDEX_KEY: int(index)})
        return data
