"""Helpers shared by FIND's detectron2 dataset registrations.

* :func:`panoptic_metadata`: detectron2 / Mask2Former panoptic metadata from a COCO ``categories``
  list (things first, so instance contiguous ids are ``0..#things-1`` as ``COCOEvaluator`` asserts;
  the stuff map covers every category so ``SemSegEvaluator`` works on the semantic PNGs);
* re-exported from :mod:`find_plugin.data.files` (framework-free, shared with the MMDetection
  adapter): :func:`datasets_root`, :func:`load_captions`, :func:`rgb2id` / :func:`id2rgb`,
  :func:`read_json`, :func:`require_file` / :func:`missing_files`.
"""

from typing import Dict, List, Mapping, Sequence

import numpy as np

from ...data.files import (
    datasets_root,
    id2rgb,
    load_captions,
    missing_files,
    read_json,
    require_file,
    rgb2id,
)

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
