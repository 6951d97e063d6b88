"""COCO Karpathy retrieval splits (image-text retrieval evaluation, spec §5.4).

Registered names (root ``$DETECTRON2_DATASETS``; read only by ``DatasetCatalog.get``)::

    find_coco_karpathy_test    5,000 images, ~25k captions (the standard IR@k / TR@k split)
    find_coco_karpathy_val     5,000 images

Layout: Karpathy's split file ``coco/annotations/dataset_coco.json`` (``{"images": [{"filepath":
"val2014", "filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895, "split": "test",
"sentences": [{"raw": ...}, ...]}, ...]}``) and the COCO images under ``coco/``: the 2014 name
``coco/{filepath}/{filename}`` is used when it exists, else the 2017 name of the same picture
``coco/{train,val}2017/{cocoid:012d}.jpg`` (COCO 2017 re-splits the 2014 images), so a COCO 2017
download is enough.

Dataset dicts: ``file_name``, ``image_id`` (the COCO id), ``captions`` (list of str, the raw
sentences). Every image must have at least one caption (a retrieval gallery entry without text is
an error naming the file and the image).
"""

import functools
import os
from typing import Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...data.karpathy import load_karpathy_json

__all__ = [
    "KARPATHY_SPLITS",
    "karpathy_paths",
    "load_karpathy_json",
    "register_find_karpathy",
    "register_all_find_karpathy",
]

#: registered name -> Karpathy split(s)
KARPATHY_SPLITS = {
    "find_coco_karpathy_test": ("test",),
    "find_coco_karpathy_val": ("val",),
}


def karpathy_paths(root: str) -> dict:
    """``json_file`` and ``image_root`` of the layout above under ``root``."""
    coco = os.path.join(root, "coco")
    return {
        "json_file": os.path.join(coco, "annotations", "dataset_coco.json"),
        "image_root": coco,
    }


def register_find_karpathy(
    name: str,
    json_file: str,
    image_root: str,
    splits: Sequence[str] = ("test",),
    *,
    metadata: Optional[dict] = None,
) -> None:
    """Register a retrieval split as ``name`` (reads nothing until ``DatasetCatalog.get``).
    Metadata: ``json_file``, ``image_root``, ``evaluator_type="find_retrieval"``,
    ``find_train_tasks=()``, ``find_eval_tasks=("retrieval",)``,
    ``find_eval_mapper="find_retrieval_eval"`` and ``metadata``."""
    DatasetCatalog.register(
        name, functools.partial(load_karpathy_json, name, json_file, image_root, tuple(splits))
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        karpathy_splits=tuple(splits),
        evaluator_type="find_retrieval",
        find_train_tasks=(),
        find_eval_tasks=("retrieval",),
        find_eval_mapper="find_retrieval_eval",
        **(metadata or {}),
    )


def register_all_find_karpathy(root: str) -> None:
    """Register :data:`KARPATHY_SPLITS` under ``root`` (reads no file)."""
    for name, splits in KARPATHY_SPLITS.items():
        register_find_karpathy(name, **karpathy_paths(root), splits=splits)
