"""Writers of the on-disk formats the FIND datasets read (COCO panoptic / instances / captions,
semantic PNGs, Karpathy split entries), with fixed encoder settings so that the same arrays give
byte-identical files. Used by ``tools/build_demo_dataset.py`` and the tests' tiny dataset; a
custom dataset can be converted with them too.
"""

import json
import os
from typing import List, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .common import id2rgb

__all__ = [
    "instance_annotation",
    "karpathy_entry",
    "mask_bbox",
    "save_jpeg",
    "save_panoptic_png",
    "save_semantic_png",
    "write_json",
]

#: JPEG and PNG settings (fixed: the default of a future Pillow must not change the bytes).
JPEG_OPTIONS = {"quality": 92, "subsampling": 0, "optimize": False}
PNG_OPTIONS = {"compress_level": 6, "optimize": False}


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` (folders created) with sorted keys and no spaces."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))


def mask_bbox(mask: np.ndarray) -> List[float]:
    """COCO ``[x, y, w, h]`` of the True pixels of ``mask`` [H, W] (it must have one)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("mask_bbox: the mask is empty (a COCO segment needs at least one pixel)")
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def instance_annotation(
    ann_id: int, image_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0
) -> dict:
    """A COCO instances-json annotation of ``mask`` [H, W] (bool): compressed RLE
    ``segmentation`` (pycocotools), ``area``, ``bbox``."""
    mask = np.asarray(mask, dtype=bool)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode()},
        "area": int(mask.sum()),
        "bbox": mask_bbox(mask),
        "iscrowd": int(iscrowd),
    }


def karpathy_entry(
    imgid: int, cocoid: int, filepath: str, filename: str, split: str, captions: Sequence[str]
) -> dict:
    """One ``images[]`` entry of Karpathy's ``dataset_coco.json`` (the image is
    ``<image_root>/<filepath>/<filename>``)."""
    return {
        "filepath": filepath,
        "filename": filename,
        "imgid": int(imgid),
        "cocoid": int(cocoid),
        "split": split,
        "sentences": [
            {"raw": c, "tokens": c.replace(",", " ").replace(".", " ").split(), "imgid": imgid}
            for c in captions
        ],
    }


def save_jpeg(path: str, pixels: np.ndarray) -> None:
    """``pixels`` [H, W, 3] uint8 RGB as a JPEG with :data:`JPEG_OPTIONS`."""
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, "JPEG", **JPEG_OPTIONS)


def save_panoptic_png(path: str, segment_ids: np.ndarray) -> None:
    """Segment ids [H, W] (0 = void) as a COCO panoptic PNG (``id = R + 256 G + 256^2 B``)."""
    Image.fromarray(id2rgb(segment_ids)).save(path, "PNG", **PNG_OPTIONS)


def save_semantic_png(path: str, labels: np.ndarray) -> None:
    """Contiguous class ids [H, W] (255 = ignore) as an 8-bit PNG."""
    Image.fromarray(np.asarray(labels, dtype=np.uint8)).save(path, "PNG", **PNG_OPTIONS)
