"""RefCOCO, RefCOCO+ and RefCOCOg (referring segmentation, spec §2 "Grounded", §5.4), read from
the standard ``refer`` files (Licheng Yu's ``refs(*).p`` pickles + ``instances.json``).

Registered names (root ``$DETECTRON2_DATASETS``; nothing is read until ``DatasetCatalog.get``)::

    find_refcocog_umd_{train,val,test}
    find_refcoco_unc_{train,val,testA,testB}
    find_refcocoplus_unc_{train,val,testA,testB}

Layout::

    refcoco/instances.json      refcoco/refs(unc).p
    refcoco+/instances.json     refcoco+/refs(unc).p
    refcocog/instances.json     refcocog/refs(umd).p
    coco/train2014/COCO_train2014_{id:012d}.jpg   (else coco/train2017/{id:012d}.jpg, same picture)

The files are parsed by :func:`find_plugin.data.refcoco.load_grounding_info` (framework-free; the
pickles are read with :func:`~find_plugin.data.safe_pickle.load_plain_pickle`: no code runs).
A ref is ``{"ref_id", "ann_id", "image_id", "split", "category_id", "sentences": [{"raw", ...}]}``;
its mask is the ``instances.json`` annotation ``ann_id`` (polygons or RLE).

Dataset dicts (one per image of the split, in order of first appearance in the pickle):
``file_name``, ``image_id``, ``height``, ``width``, ``grounding_info``: list of ``{"ref_id",
"ann_id", "category_id", "sentences": [str], "segmentation"}`` (one per ref). The mappers turn
``grounding_info`` into the record's ``groundings`` (:mod:`find_plugin.d2.mappers.language`):
training draws one sentence per ref, evaluation takes every sentence with its ref's mask.
"""

import functools
import os
from typing import Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...data.refcoco import load_find_refcoco, load_grounding_info

__all__ = [
    "PREDEFINED_FIND_REFCOCO",
    "refcoco_paths",
    "load_grounding_info",
    "load_find_refcoco",
    "register_find_refcoco",
    "register_all_find_refcoco",
]

#: name -> (folder, splitBy, split)
PREDEFINED_FIND_REFCOCO = {
    **{f"find_refcocog_umd_{s}": ("refcocog", "umd", s) for s in ("train", "val", "test")},
    **{f"find_refcoco_unc_{s}": ("refcoco", "unc", s) for s in ("train", "val", "testA", "testB")},
    **{
        f"find_refcocoplus_unc_{s}": ("refcoco+", "unc", s)
        for s in ("train", "val", "testA", "testB")
    },
}


def refcoco_paths(root: str, folder: str, split_by: str) -> dict:
    """``refs_file``, ``instances_json`` and ``image_root`` (the ``coco`` folder) of the layout
    above under ``root``."""
    return {
        "refs_file": os.path.join(root, folder, f"refs({split_by}).p"),
        "instances_json": os.path.join(root, folder, "instances.json"),
        "image_root": os.path.join(root, "coco"),
    }


def register_find_refcoco(
    name: str,
    refs_file: str,
    instances_json: str,
    image_root: str,
    split: str,
    *,
    find_train_tasks: Optional[Sequence[str]] = None,
    find_eval_tasks: Sequence[str] = ("grounding",),
    metadata: Optional[dict] = None,
) -> None:
    """Register one RefCOCO-style split as ``name`` (reads nothing until ``DatasetCatalog.get``).

    Metadata: ``refs_file``, ``json_file`` (instances), ``image_root``, ``split``,
    ``evaluator_type="find_grounding"``, ``find_train_tasks`` (default ``("grounding",)`` for a
    ``train`` split, else ``()``), ``find_eval_tasks`` (``("grounding",)``),
    ``find_eval_mapper="find_panoptic_eval"`` (it reads ``grounding_info`` and needs no panoptic
    PNG) and ``metadata``."""
    if find_train_tasks is None:
        find_train_tasks = ("grounding",) if split == "train" else ()
    DatasetCatalog.register(
        name,
        functools.partial(load_find_refcoco, name, refs_file, instances_json, image_root, split),
    )
    MetadataCatalog.get(name).set(
        refs_file=refs_file,
        json_file=instances_json,
        image_root=image_root,
        split=split,
        evaluator_type="find_grounding",
        find_train_tasks=tuple(find_train_tasks),
        find_eval_tasks=tuple(find_eval_tasks),
        find_eval_mapper="find_panoptic_eval",
        **(metadata or {}),
    )


def register_all_find_refcoco(root: str) -> None:
    """Register :data:`PREDEFINED_FIND_REFCOCO` under ``root`` (reads no file)."""
    for name, (folder, split_by, split) in PREDEFINED_FIND_REFCOCO.items():
        register_find_refcoco(name, **refcoco_paths(root, folder, split_by), split=split)
