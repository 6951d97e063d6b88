"""The one call that registers a dataset with its FIND tasks: COCO panoptic (+ semantic PNGs,
+ instances json, + captions), joined per image with RefCOCO-style referring expressions and
FIND-Bench entity sentences.

FIND trains every task on every image (spec §2.2): the official COCO training set is COCO
panoptic + captions with the RefCOCOg (umd) refs and the COCO-Entity sentences of the same
image attached to it. :func:`register_find_dataset` builds exactly that from files in the
standard formats, so a user's own data (and the demo dataset of ``tools/build_demo_dataset.py``)
is registered the same way as COCO::

    from find_plugin.d2.datasets import panoptic_metadata, register_find_dataset

    register_find_dataset(
        "my_train", panoptic_metadata(categories), training=True,
        image_root=..., panoptic_root=..., panoptic_json=..., sem_seg_root=...,
        instances_json=..., captions_json=...,
        refs_file=".../refs(unc).p", refs_instances_json=".../instances.json", refs_split="train",
        entity_json=".../entity_train2017.json",
    )

Joins are by image id: ``grounding_info`` (:func:`find_plugin.data.refcoco.load_grounding_info`)
and ``entity_info`` (:func:`find_plugin.data.entities.parse_entity_annotations`, phrases =
panoptic segment ids of the image). Every ref and every entity sentence must belong to an image
of the panoptic set: one that does not is an error naming the file and the image (nothing is
dropped silently).

Tasks (``find_train_tasks`` / ``find_eval_tasks`` of the metadata) default to what the files
given can feed (:func:`default_find_tasks`).
"""

import functools
import logging
from typing import Callable, Iterable, Mapping, Optional, Sequence, Set, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...data.entities import parse_entity_annotations
from ...data.files import read_json, require_file
from ...data.refcoco import check_images_joined, load_grounding_info
from ...data.safe_pickle import load_plain_pickle
from .coco_panoptic import load_find_coco_panoptic

__all__ = [
    "default_find_tasks",
    "held_out_image_ids",
    "load_find_dataset",
    "register_find_dataset",
]

logger = logging.getLogger(__name__)

_METADATA_KEYS = (
    "thing_classes",
    "stuff_classes",
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
)


def default_find_tasks(
    *, training: bool, captions: bool, refs: bool, entities: bool
) -> Tuple[str, ...]:
    """The tasks a panoptic dataset with these extra files feeds. Training: generic, grounding
    (class-name sentences when there are no refs, spec §2.2), interactive, retrieval (captions),
    interleave (entities). Evaluation: generic, interactive, grounding (refs), retrieval
    (captions), interleave + interleave_retrieval (entities)."""
    if training:
        tasks = ["generic", "grounding", "interactive"]
    else:
        tasks = ["generic", "interactive"] + (["grounding"] if refs else [])
    tasks += ["retrieval"] if captions else []
    if entities:
        tasks += ["interleave"] if training else ["interleave", "interleave_retrieval"]
    return tuple(tasks)


def load_find_dataset(
    name: str,
    metadata: Mapping,
    *,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str] = None,
    captions_json: Optional[str] = None,
    require_captions: bool = False,
    refs_file: Optional[str] = None,
    refs_instances_json: Optional[str] = None,
    refs_split: Optional[str] = None,
    entity_json: Optional[str] = None,
    exclude_images: Optional[Callable[[], Iterable[int]]] = None,
) -> list:
    """Dataset dicts of :func:`~.coco_panoptic.load_find_coco_panoptic` plus, per image,
    ``grounding_info`` (when ``refs_file`` is given; ``[]`` for an image without refs) and
    ``entity_info`` (when ``entity_json`` is given; ``[]`` for an image without sentences).
    ``exclude_images()`` gives image ids left out after the joins (e.g.
    :func:`held_out_image_ids`: the images of other benchmarks' evaluation splits); how many
    were left out is logged."""
    dicts = load_find_coco_panoptic(
        name,
        metadata,
        image_root,
        panoptic_root,
        panoptic_json,
        sem_seg_root,
        captions_json,
        require_captions,
    )
    by_id = {d["image_id"]: d for d in dicts}
    if refs_file:
        if not refs_instances_json or not refs_split:
            raise ValueError(
                f"dataset {name!r}: refs_file {refs_file!r} needs refs_instances_json (its "
                "instances.json) and refs_split (e.g. 'train')"
            )
        per_image, _ = load_grounding_info(name, refs_file, refs_instances_json, refs_split)
        check_images_joined(name, refs_file, per_image, by_id, panoptic_json)
        for d in dicts:
            d["grounding_info"] = list(per_image.get(d["image_id"], []))
    if entity_json:
        data = read_json(entity_json, dataset_name=name, what="FIND-Bench entity file")
        segment_ids = {d["image_id"]: {s["id"] for s in d["segments_info"]} for d in dicts}
        # parse_entity_annotations names a sentence of an image outside the panoptic set
        entities = parse_entity_annotations(entity_json, data, segment_ids, dataset_name=name)
        for d in dicts:
            d["entity_info"] = list(entities.get(d["image_id"], []))
    if exclude_images is not None:
        held_out = set(int(i) for i in exclude_images())
        kept = [d for d in dicts if d["image_id"] not in held_out]
        logger.info(
            "dataset %r: %d of %d images left out (held-out evaluation images)",
            name,
            len(dicts) - len(kept),
            len(dicts),
        )
        dicts = kept
    return dicts


def held_out_image_ids(
    name: str,
    *,
    refs_file: Optional[str] = None,
    refs_splits: Sequence[str] = ("val", "test"),
    karpathy_json: Optional[str] = None,
    karpathy_splits: Sequence[str] = ("val", "test"),
) -> Set[int]:
    """Image ids of the refs of ``refs_splits`` in ``refs_file`` and of the images of
    ``karpathy_splits`` in a Karpathy ``karpathy_json``: what the official FIND training set
    leaves out of COCO train2017 (``*_filtrefgumdval_filtvlp``: RefCOCOg-umd val and Karpathy
    val/test images, spec §4). Each file given must exist."""
    ids: Set[int] = set()
    if refs_file:
        require_file(refs_file, dataset_name=name, what="refs pickle (held-out images)")
        refs = load_plain_pickle(refs_file)
        ids |= {int(r["image_id"]) for r in refs if r.get("split") in refs_splits}
    if karpathy_json:
        data = read_json(karpathy_json, dataset_name=name, what="Karpathy split file")
        for img in data.get("images", []):
            if img.get("split") in karpathy_splits:
                ids.add(int(img.get("cocoid", img.get("imgid"))))
    return ids


def register_find_dataset(
    name: str,
    metadata: Mapping,
    *,
    training: bool,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    captions_json: Optional[str] = None,
    require_captions: Optional[bool] = None,
    refs_file: Optional[str] = None,
    refs_instances_json: Optional[str] = None,
    refs_split: Optional[str] = None,
    entity_json: Optional[str] = None,
    exclude_images: Optional[Callable[[], Iterable[int]]] = None,
    find_train_tasks: Optional[Sequence[str]] = None,
    find_eval_tasks: Optional[Sequence[str]] = None,
    find_eval_mapper: str = "find_panoptic_eval",
) -> None:
    """Register ``name`` (nothing is read until ``DatasetCatalog.get(name)``).

    ``metadata``: class lists and id maps (:func:`~.common.panoptic_metadata` of the categories).
    ``training``: declares ``find_train_tasks`` (default :func:`default_find_tasks`); an
    evaluation split declares none. ``require_captions`` (default: ``training`` and captions
    given) makes an image without a caption an error. ``exclude_images``: see
    :func:`load_find_dataset`. ``MetadataCatalog.get(name)`` gets
    detectron2's usual keys (``image_root``, ``panoptic_root``, ``panoptic_json``, ``json_file``
    (instances json, for ``COCOEvaluator``), ``sem_seg_root``, ``evaluator_type=
    "coco_panoptic_seg"``, ``ignore_label=255``, ``label_divisor=1000``), the joined files
    (``captions_json``, ``refs_file``, ``entity_json``) and FIND's ``find_train_tasks``,
    ``find_eval_tasks``, ``find_eval_mapper``."""
    missing = [k for k in _METADATA_KEYS if k not in metadata]
    if missing:
        raise KeyError(
            f"register_find_dataset({name!r}): metadata lacks {missing} (build it with "
            "find_plugin.d2.datasets.panoptic_metadata(categories))"
        )
    has = dict(captions=bool(captions_json), refs=bool(refs_file), entities=bool(entity_json))
    if find_train_tasks is None:
        find_train_tasks = default_find_tasks(training=True, **has) if training else ()
    if find_eval_tasks is None:
        find_eval_tasks = default_find_tasks(training=False, **has)
    if require_captions is None:
        require_captions = bool(training and captions_json)
    DatasetCatalog.register(
        name,
        functools.partial(
            load_find_dataset,
            name,
            dict(metadata),
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            captions_json=captions_json,
            require_captions=require_captions,
            refs_file=refs_file,
            refs_instances_json=refs_instances_json,
            refs_split=refs_split,
            entity_json=entity_json,
            exclude_images=exclude_images,
        ),
    )
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        json_file=instances_json,
        captions_json=captions_json,
        refs_file=refs_file,
        entity_json=entity_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        find_train_tasks=tuple(find_train_tasks) if training else (),
        find_eval_tasks=tuple(find_eval_tasks),
        find_eval_mapper=find_eval_mapper,
        **metadata,
    )
