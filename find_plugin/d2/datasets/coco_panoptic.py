"""COCO panoptic (+ semantic PNGs) joined with COCO captions, in detectron2's layout.

Registered names (root ``$DETECTRON2_DATASETS``, default ``./datasets``; nothing is read at
import, the files are read when ``DatasetCatalog.get(name)`` is called)::

    find_coco_2017_train_panoptic_caption      coco/train2017, captions required
    find_coco_2017_val_panoptic_with_sem_seg   coco/val2017, captions joined when present

Layout (detectron2 + Mask2Former's ``prepare_coco_semantic_annos_from_panoptic_annos.py``)::

    coco/{train,val}2017/*.jpg
    coco/panoptic_{train,val}2017/*.png
    coco/panoptic_semseg_{train,val}2017/*.png     (contiguous ids, 255 = ignore)
    coco/annotations/panoptic_{train,val}2017.json
    coco/annotations/instances_{train,val}2017.json
    coco/annotations/captions_{train,val}2017.json

Dataset dicts are detectron2's ``load_coco_panoptic_json`` ones (``file_name``, ``image_id``,
``pan_seg_file_name``, ``segments_info`` with contiguous ``category_id`` and ``isthing``) plus
``sem_seg_file_name`` and ``captions`` (list of str). Images must be ``.jpg`` named like their
panoptic PNG (detectron2's reader assumes it).

Captions: with ``require_captions=True`` (training names: the retrieval task trains on one caption
per image) an image without a caption is an error naming the captions file and the image; with
False it gets ``captions: []``. ``captions_json=None`` joins no captions.
"""

import os
from typing import Mapping, Optional, Sequence

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from .common import load_captions, missing_files, panoptic_metadata, read_json, require_file

__all__ = [
    "COCO_PANOPTIC_TRAIN_TASKS",
    "coco_panoptic_metadata",
    "coco_panoptic_paths",
    "load_find_coco_panoptic",
    "register_find_coco_panoptic",
    "register_all_find_coco_panoptic",
    "PREDEFINED_FIND_COCO_PANOPTIC",
]

#: Tasks a panoptic + captions image trains (interleave needs FIND-Bench entities).
COCO_PANOPTIC_TRAIN_TASKS = ("generic", "grounding", "interactive", "retrieval")

#: name -> (split, require_captions)
PREDEFINED_FIND_COCO_PANOPTIC = {
    "find_coco_2017_train_panoptic_caption": ("train2017", True),
    "find_coco_2017_val_panoptic_with_sem_seg": ("val2017", False),
}


def coco_panoptic_metadata() -> dict:
    """Metadata of COCO's 133 panoptic categories (detectron2's ``COCO_CATEGORIES``)."""
    return panoptic_metadata(COCO_CATEGORIES)


def coco_panoptic_paths(root: str, split: str) -> dict:
    """Paths of COCO ``split`` (e.g. ``"val2017"``) under ``root`` in the layout above: keys
    ``image_root``, ``panoptic_root``, ``panoptic_json``, ``sem_seg_root``, ``instances_json``,
    ``captions_json`` (the keyword arguments of :func:`register_find_coco_panoptic`)."""
    coco = os.path.join(root, "coco")
    ann = os.path.join(coco, "annotations")
    return {
        "image_root": os.path.join(coco, split),
        "panoptic_root": os.path.join(coco, f"panoptic_{split}"),
        "panoptic_json": os.path.join(ann, f"panoptic_{split}.json"),
        "sem_seg_root": os.path.join(coco, f"panoptic_semseg_{split}"),
        "instances_json": os.path.join(ann, f"instances_{split}.json"),
        "captions_json": os.path.join(ann, f"captions_{split}.json"),
    }


def load_find_coco_panoptic(
    name: str,
    metadata: Mapping,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str],
    captions_json: Optional[str],
    require_captions: bool = True,
) -> list:
    """Dataset dicts of one registered split (see the module docstring). Errors name the dataset,
    the file and the entry: a missing file or folder, a category id outside the metadata's
    categories, a listed image / panoptic PNG / semantic PNG that does not exist, an image
    without captions when they are required."""
    require_file(panoptic_json, dataset_name=name, what="panoptic json")
    require_file(image_root, dataset_name=name, what="image folder", isdir=True)
    require_file(panoptic_root, dataset_name=name, what="panoptic PNG folder", isdir=True)
    if sem_seg_root:
        require_file(sem_seg_root, dataset_name=name, what="semantic PNG folder", isdir=True)
    captions = load_captions(captions_json, dataset_name=name) if captions_json else None
    try:
        dicts = load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, dict(metadata))
    except KeyError as e:
        _raise_unknown_category(name, panoptic_json, metadata)
        raise ValueError(
            f"dataset {name!r}: {panoptic_json} is not a COCO panoptic json (missing key {e})"
        ) from e
    except AssertionError:
        # detectron2 asserts on an empty list or on the first entry's files: say which and why.
        dicts = None
    if dicts is None:
        _raise_bad_entry(name, panoptic_json, image_root, panoptic_root)
    for d in dicts:
        if sem_seg_root:
            png = os.path.basename(d["pan_seg_file_name"])
            d["sem_seg_file_name"] = os.path.join(sem_seg_root, png)
        d["captions"] = list(captions.get(d["image_id"], [])) if captions is not None else []
        if require_captions and not d["captions"]:
            raise ValueError(
                f"dataset {name!r}: image {d['image_id']} ({d['file_name']}) has no caption in "
                f"{captions_json} (captions are required for this dataset: the retrieval task "
                "trains on them; register with require_captions=False to allow it)"
            )
    _check_files(name, dicts, panoptic_json)
    return dicts


def _check_files(name, dicts, panoptic_json):
    for key, what in (
        ("file_name", "image"),
        ("pan_seg_file_name", "panoptic PNG"),
        ("sem_seg_file_name", "semantic PNG"),
    ):
        paths = [d[key] for d in dicts if key in d]
        missing = set(missing_files(paths))
        if missing:
            d = next(d for d in dicts if d.get(key) in missing)
            raise FileNotFoundError(
                f"dataset {name!r}: {what} {d[key]!r} of image {d['image_id']} (entry of "
                f"{panoptic_json}) does not exist ({len(missing)} missing in all)"
            )


def _raise_unknown_category(name, panoptic_json, metadata):
    known = set(metadata["thing_dataset_id_to_contiguous_id"]) | set(
        metadata["stuff_dataset_id_to_contiguous_id"]
    )
    data = read_json(panoptic_json, dataset_name=name, what="panoptic json")
    for ann in data.get("annotations", []):
        for seg in ann.get("segments_info", []):
            if seg.get("category_id") not in known:
                raise ValueError(
                    f"dataset {name!r}: {panoptic_json}: segment {seg.get('id')} of image "
                    f"{ann.get('image_id')} ({ann.get('file_name')}) has category_id "
                    f"{seg.get('category_id')}, which is not in the categories list "
                    f"({len(known)} ids: {sorted(known)[:10]}...)"
                )


def _raise_bad_entry(name, panoptic_json, image_root, panoptic_root):
    data = read_json(panoptic_json, dataset_name=name, what="panoptic json")
    anns = data.get("annotations", [])
    if not anns:
        raise ValueError(f"dataset {name!r}: {panoptic_json} lists no annotations")
    ann = anns[0]
    stem = os.path.splitext(ann["file_name"])[0]
    for path, what in (
        (os.path.join(image_root, stem + ".jpg"), "image"),
        (os.path.join(panoptic_root, ann["file_name"]), "panoptic PNG"),
    ):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"dataset {name!r}: {what} {path!r} of image {ann.get('image_id')} (entry of "
                f"{panoptic_json}) does not exist"
            )
    raise RuntimeError(f"dataset {name!r}: detectron2 could not read {panoptic_json}")


def register_find_coco_panoptic(
    name: str,
    metadata: Mapping,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    captions_json: Optional[str] = None,
    *,
    require_captions: bool = True,
    find_train_tasks: Sequence[str] = COCO_PANOPTIC_TRAIN_TASKS,
    find_eval_tasks: Sequence[str] = ("generic",),
    find_eval_mapper: str = "find_panoptic_eval",
) -> None:
    """Register a COCO-format panoptic dataset (+ semantic PNGs, + captions) as ``name``.

    Nothing is read here: the files are read by ``DatasetCatalog.get(name)``. ``metadata`` holds
    the class lists and id maps (:func:`~.common.panoptic_metadata` of the categories;
    :func:`coco_panoptic_metadata` for COCO). Besides it, ``MetadataCatalog.get(name)`` gets
    detectron2's usual keys (``image_root``, ``panoptic_root``, ``panoptic_json``, ``json_file``
    (instances json, for ``COCOEvaluator``), ``sem_seg_root``, ``captions_json``,
    ``evaluator_type="coco_panoptic_seg"``, ``ignore_label=255``, ``label_divisor=1000``) and
    FIND's ``find_train_tasks``, ``find_eval_tasks`` and ``find_eval_mapper`` (name of the
    evaluation mapper in the FIND mapper registry). It is
    :func:`~.find_dataset.register_find_dataset` without refs or entity sentences."""
    from .find_dataset import register_find_dataset  # it builds on this module's loader

    register_find_dataset(
        name,
        metadata,
        training=True,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        instances_json=instances_json,
        captions_json=captions_json,
        require_captions=require_captions,
        find_train_tasks=find_train_tasks,
        find_eval_tasks=find_eval_tasks,
        find_eval_mapper=find_eval_mapper,
    )


def register_all_find_coco_panoptic(root: str) -> None:
    """Register :data:`PREDEFINED_FIND_COCO_PANOPTIC` under ``root`` (reads no file)."""
    meta = coco_panoptic_metadata()
    for name, (split, require_captions) in PREDEFINED_FIND_COCO_PANOPTIC.items():
        register_find_coco_panoptic(
            name, meta, **coco_panoptic_paths(root, split), require_captions=require_captions
        )
