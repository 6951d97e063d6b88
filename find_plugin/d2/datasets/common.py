"""Helpers shared by FIND's detectron2 dataset registrations.

* :func:`datasets_root`: ``$DETECTRON2_DATASETS`` (default ``./datasets``), read like detectron2's
  ``builtin.py``;
* :func:`panoptic_metadata`: detectron2 / Mask2Former panoptic metadata from a COCO ``categories``
  list (things first, so instance contiguous ids are ``0..#things-1`` as ``COCOEvaluator`` asserts;
  the stuff map covers every category so ``SemSegEvaluator`` works on the semantic PNGs);
* :func:`load_captions`: ``image_id -> [caption]`` of a COCO captions JSON;
* :func:`rgb2id`: panoptic PNG colour -> segment id (the panopticapi formula, without the package);
* :func:`require_file` / :func:`missing_files`: existence checks whose errors name the dataset,
  the path and the entry, instead of a bare assertion deep in a loader.
"""

import collections
import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "datasets_root",
    "panoptic_metadata",
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


def panoptic_metadata(categories: Sequence[Mapping]) -> Dict[str, object]:
    """Metadata of a panoptic dataset from COCO ``categories`` (``id``, ``name``, ``isthing``,
    optional ``color``).

    Contiguous ids: things in the given order, then stuff (for COCO's 133 categories this is
    detectron2's ``COCO_CATEGORIES`` order). Returns ``thing_classes`` / ``thing_colors`` (things),
    ``stuff_classes`` / ``stuff_colors`` (every category, indexed by contiguous id),
    ``thing_dataset_id_to_contiguous_id`` (things) and ``stuff_dataset_id_to_contiguous_id``
    (every category, Mask2Former's ``_with_sem_seg`` convention)."""
    if not categories:
        raise ValueError("panoptic_metadata: empty categories list")
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"panoptic_metadata: duplicate category ids in {sorted(ids)}")
    ordered = [c for c in categories if c.get("isthing")] + [
        c for c in categories if not c.get("isthing")
    ]
    colors = [list(c.get("color", _default_color(int(c["id"])))) for c in ordered]
    things = [c for c in ordered if c.get("isthing")]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": colors[: len(things)],
        "stuff_classes": [c["name"] for c in ordered],
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(ordered)},
    }


def _default_color(cid: int) -> List[int]:
    rng = np.random.default_rng(cid)
    return [int(v) for v in rng.integers(0, 256, 3)]


def read_json(path: str, *, dataset_name: str, what: str):
    require_file(path, dataset_name=dataset_name, what=what)
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset {dataset_name!r}: {what} {path} is not valid JSON: {e}")


def load_captions(captions_json: str, *, dataset_name: str) -> Dict[int, List[str]]:
    """``image_id -> [caption, ...]`` of a COCO captions file (``annotations/captions_*.json``),
    in file order."""
    data = read_json(captions_json, dataset_name=dataset_name, what="captions json")
    if "annotations" not in data:
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


def require_file(path: Optional[str], *, dataset_name: str, what: str, isdir=False) -> None:
    """Raise FileNotFoundError naming ``dataset_name``, ``what`` and the expected ``path``."""
    ok = os.path.isdir(path) if isdir else os.path.isfile(path)
    if not ok:
        raise FileNotFoundError(
            f"dataset {dataset_name!r}: {what} not found at {path!r} (datasets live under "
            f"$DETECTRON2_DATASETS, now {datasets_root()!r}; see find_plugin/d2/datasets)"
        )


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
