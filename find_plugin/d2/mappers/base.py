"""Reading one detectron2 dataset dict for FIND's mappers: the image, the panoptic PNG (validated
against its ``segments_info``) and the per-segment masks, with errors naming file and entry."""

import os
from typing import Mapping, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils

from ..datasets.common import rgb2id

__all__ = ["read_image", "read_panoptic", "segment_masks", "image_tensor"]


def _entry(d: Mapping) -> str:
    return f"image {d.get('image_id')} ({d.get('file_name')})"


def read_image(d: Mapping, image_format: str) -> np.ndarray:
    """[H, W, C] uint8 image of dataset dict ``d`` in ``image_format``, size-checked against its
    ``height``/``width`` when present."""
    path = d["file_name"]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} of dataset entry {_entry(d)} does not exist")
    image = utils.read_image(path, format=image_format)
    utils.check_image_size(d, image)
    return image


def read_panoptic(d: Mapping, image_size: Tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 panoptic PNG of ``d``. Raises when the PNG is missing, its size differs
    from the image's, or a segment of ``segments_info`` has no pixel in it."""
    path = d.get("pan_seg_file_name")
    if path is None:
        raise KeyError(f"dataset entry {_entry(d)} has no 'pan_seg_file_name'")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"panoptic PNG {path!r} of dataset entry {_entry(d)} does not exist"
        )
    rgb = utils.read_image(path, "RGB")
    if tuple(rgb.shape[:2]) != tuple(image_size):
        raise ValueError(
            f"panoptic PNG {path!r} is {rgb.shape[:2]} but its image {_entry(d)} is "
            f"{tuple(image_size)}"
        )
    present = set(np.unique(rgb2id(rgb)).tolist())
    absent = [s["id"] for s in d.get("segments_info", []) if s["id"] not in present]
    if absent:
        raise ValueError(
            f"panoptic PNG {path!r}: segment id(s) {absent} of {_entry(d)}, listed in the "
            "panoptic json's segments_info, have no pixel in the PNG"
        )
    return rgb


def segment_masks(
    ids: np.ndarray, segments: Sequence[Mapping]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``labels`` [N] int64 (contiguous ``category_id``) and ``masks`` [N, H, W] bool of
    ``segments`` in the id map ``ids`` [H, W]."""
    labels = torch.tensor([int(s["category_id"]) for s in segments], dtype=torch.long)
    if not segments:
        return labels, torch.zeros(0, *ids.shape, dtype=torch.bool)
    masks = np.stack([ids == s["id"] for s in segments])
    return labels, torch.from_numpy(masks)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, C] array -> [C, H, W] tensor (uint8 kept; shared memory friendly)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
