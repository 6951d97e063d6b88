"""The demo dataset (``tools/build_demo_dataset.py``) registered through the public API.

Registered names (root ``$DETECTRON2_DATASETS``; nothing is read until ``DatasetCatalog.get``;
build the files with ``python tools/build_demo_dataset.py``)::

    find_demo_train     400 images: panoptic + captions + referring expressions + entity
                        sentences; trains generic, grounding, interactive, retrieval, interleave
    find_demo_val       100 images: the same files of the val split; evaluates generic,
                        interactive, grounding, retrieval, interleave, interleave_retrieval
    find_demo_karpathy_test   the val images as a Karpathy-format retrieval split

Both panoptic names are one :func:`~.find_dataset.register_find_dataset` call each, exactly as
``docs/custom_dataset.md`` shows for a user's own data: the demo is the worked example.
"""

import os
from typing import Dict, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_panoptic import coco_panoptic_paths
from .common import datasets_root, panoptic_metadata
from .demo_scenes import DEMO_CATEGORIES
from .find_dataset import register_find_dataset
from .karpathy import register_find_karpathy

__all__ = ["DEMO_FOLDER", "DEMO_SPLITS", "demo_metadata", "demo_paths", "register_find_demo"]

DEMO_FOLDER = "find_demo"
#: registered name -> (COCO split, refs split, training)
DEMO_SPLITS = {
    "find_demo_train": ("train2017", "train", True),
    "find_demo_val": ("val2017", "val", False),
}


def demo_paths(root: str, folder: str = DEMO_FOLDER) -> Dict[str, object]:
    """Paths of the demo dataset under ``root`` (the folder that holds ``find_demo/``): ``base``,
    ``train`` and ``val`` (:func:`~.coco_panoptic.coco_panoptic_paths`: image_root,
    panoptic_root, panoptic_json, sem_seg_root, instances_json, captions_json),
    ``karpathy_json``, ``karpathy_image_root``, ``entity_{train,val}_json``, ``refs_pickle``,
    ``refcoco_instances_json``."""
    base = os.path.join(str(root), folder)
    ann = os.path.join(base, "coco", "annotations")
    return {
        "base": base,
        "train": coco_panoptic_paths(base, "train2017"),
        "val": coco_panoptic_paths(base, "val2017"),
        "karpathy_json": os.path.join(ann, "dataset_coco.json"),
        "karpathy_image_root": os.path.join(base, "coco"),
        "entity_train_json": os.path.join(ann, "find_entity_train2017.json"),
        "entity_val_json": os.path.join(ann, "find_entity_val2017.json"),
        "refs_pickle": os.path.join(base, "refcoco", "refs(unc).p"),
        "refcoco_instances_json": os.path.join(base, "refcoco", "instances.json"),
    }


def demo_metadata() -> dict:
    """Class lists and id maps of the demo's 8 categories (5 things, 3 stuff)."""
    return panoptic_metadata(DEMO_CATEGORIES)


def register_find_demo(
    root: Optional[str] = None, prefix: str = "find_demo", *, overwrite: bool = False
) -> None:
    """Register ``{prefix}_train``, ``{prefix}_val`` and ``{prefix}_karpathy_test`` for the demo
    files under ``root`` (default ``$DETECTRON2_DATASETS``); reads no file. ``overwrite``
    replaces names registered before (e.g. at import, under another root)."""
    p = demo_paths(datasets_root() if root is None else root)
    names = [prefix + n[len("find_demo") :] for n in DEMO_SPLITS] + [f"{prefix}_karpathy_test"]
    if overwrite:
        for name in names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
    for name, (split, refs_split, training) in DEMO_SPLITS.items():
        name = prefix + name[len("find_demo") :]
        key = "train" if training else "val"
        register_find_dataset(
            name,
            demo_metadata(),
            training=training,
            **p[key],
            refs_file=p["refs_pickle"],
            refs_instances_json=p["refcoco_instances_json"],
            refs_split=refs_split,
            entity_json=p[f"entity_{key}_json"],
        )
    register_find_karpathy(
        f"{prefix}_karpathy_test", p["karpathy_json"], p["karpathy_image_root"], ("test",)
    )
