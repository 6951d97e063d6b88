"""FIND's datasets in MMDetection's ``DATASETS``.

``FINDCocoPanopticDataset`` is mmdet's ``CocoPanopticDataset`` (same files, same ``data_info``,
same ``CocoPanopticMetric``) plus the COCO captions of each image (``caption_ann_file``,
``annotations/captions_*.json``) under ``data_info["captions"]``: what FIND's retrieval task and
the caption-grounding of training read (:class:`~find_plugin.mmdet.transforms.FINDSampleTasks`).
"""

import collections
import os.path as osp
from typing import Dict, List, Optional

from mmdet.datasets import CocoPanopticDataset
from mmdet.registry import DATASETS
from mmengine.fileio import load

__all__ = ["FINDCocoPanopticDataset", "load_coco_captions"]


def load_coco_captions(path: str) -> Dict[int, List[str]]:
    """``image_id -> [caption, ...]`` (file order, stripped) of a COCO captions json."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"caption_ann_file {path!r} does not exist")
    data = load(path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"caption_ann_file {path!r}: a COCO captions json has 'annotations'")
    out: Dict[int, List[str]] = collections.defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        if "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise ValueError(
                f"caption_ann_file {path!r}: annotation #{k} needs 'image_id' and a string "
                "'caption'"
            )
        out[int(ann["image_id"])].append(ann["caption"].strip())
    return dict(out)


@DATASETS.register_module()
class FINDCocoPanopticDataset(CocoPanopticDataset):
    """``CocoPanopticDataset`` + captions.

    Args:
        caption_ann_file: COCO captions json (relative to ``data_root`` like ``ann_file``);
            None = no captions (every image gets ``[]``).
        require_captions: raise for an image without captions (retrieval evaluation).
        **kwargs: those of ``CocoPanopticDataset``.
    """

    def __init__(
        self, *args, caption_ann_file: Optional[str] = None, require_captions=False, **kwargs
    ):
        self.caption_ann_file = caption_ann_file
        self.require_captions = bool(require_captions)
        self._captions: Optional[Dict[int, List[str]]] = None
        super().__init__(*args, **kwargs)

    def _join(self, path: str) -> str:
        root = self.data_root or ""
        return path if osp.isabs(path) or not root else osp.join(root, path)

    def load_data_list(self) -> List[dict]:
        if self.caption_ann_file:
            self._captions = load_coco_captions(self._join(self.caption_ann_file))
        data_list = super().load_data_list()
        for info in data_list:
            caps = list((self._captions or {}).get(int(info["img_id"]), []))
            if self.require_captions and not caps:
                raise ValueError(
                    f"image {info['img_id']} ({info['img_path']}) has no caption in "
                    f"{self.caption_ann_file}; retrieval evaluation needs them"
                )
            info["captions"] = caps
        return data_list
