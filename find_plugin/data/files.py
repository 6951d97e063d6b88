"""File helpers shared by FIND's dataset loaders of both frameworks (no framework import).

* :func:`datasets_root`: ``$DETECTRON2_DATASETS`` (default ``./datasets``), where the detectron2
  registrations and the MMDetection configs look for data;
* :func:`read_json`, :func:`require_file`, :func:`missing_files`: reads and existence checks whose
  errors name the dataset, the path and what was expected;
* :func:`load_captions`: ``image_id -> [caption]`` of a COCO captions JSON;
* :func:`rgb2id` / :func:`id2rgb`: panoptic PNG colour <-> segment id (the panopticapi formula,
  without the package).
"""

import collections
import json
import os
from typing import Dict, Iterable, List, Optional

import numpy as np

__all__ = [
    "datasets_root",
    "load_captions",
    "rgb2id",
    "id2rgb",
    "require_file",
    "missing_files",
    "read_json",
]


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``, relative to the working directory)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def require_file(path: Optional[str], *, dataset_name: str, what: str, isdir=False) -> None:
    """Raise FileNotFoundError naming ``dataset_name``, ``what`` and the expected ``path``."""
    ok = bool(path) and (os.path.isdir(path) if isdir else os.path.isfile(path))
    if not ok:
        raise FileNotFoundError(
            f"dataset {dataset_name!r}: {what} not found at {path!r} (datasets live under "
            f"$DETECTRON2_DATASETS, now {datasets_root()!r})"
        )


def read_json(path: str, *, dataset_name: str, what: str):
    """The content of the JSON file ``path``; errors name the dataset and ``what`` it is."""
    require_file(path, dataset_name=dataset_name, what=what)
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset {dataset_name!r}: {what} {path} is not valid JSON: {e}")


def load_captions(captions_json: str, *, dataset_name: str) -> Dict[int, List[str]]:
    """``image_id -> [caption, ...]`` of a COCO captions file (``annotations/captions_*.json``),
    in file order, stripped."""
    data = read_json(captions_json, dataset_name=dataset_name, what="captions json")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"dataset {dataset_name!r}: captions json {captions_json} has no 'annotations' list"
        )
    out: Dict[int, List[str]] = collections.defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        if "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise ValueError(
                f"dataset {dataset_name!r}: captions json {captions_json} annotation #{k} "
                f"({ann!r:.120}) needs an 'image_id' and a string 'caption'"
            )
        out[int(ann["image_id"])].append(ann["caption"].strip())
    return dict(out)


def rgb2id(color: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 panoptic PNG -> [H, W] int32 segment ids (R + 256 G + 256^2 B)."""
    color = np.asarray(color)
    if color.ndim != 3 or color.shape[-1] != 3:
        raise ValueError(f"rgb2id expects an [H, W, 3] image, got shape {color.shape}")
    c = color.astype(np.int32)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """[H, W] segment ids -> [H, W, 3] uint8 colours (inverse of :func:`rgb2id`)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def missing_files(paths: Iterable[str]) -> List[str]:
    """The paths of ``paths`` that are not files, listing each directory once (fast on the
    118k COCO train images: one ``listdir`` per directory instead of one ``stat`` per file)."""
    listings: Dict[str, set] = {}
    out = []
    for p in paths:
        d, base = os.path.split(p)
        if d not in listings:
            listings[d] = set(os.listdir(d)) if os.path.isdir(d) else set()
        if base not in listings[d]:
            out.append(p)
    return out
