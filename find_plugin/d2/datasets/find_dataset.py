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
from typing import Mapping, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...data.entities import parse_entity_annotations
from ...data.files import read_json
from ...data.refcoco import check_images_joined, load_grounding_info
from .coco_panoptic import load_find_coco_panoptic

__all__ = ["default_find_tasks", "load_find_dataset", "register_find_dataset"]

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
) -> list:
    """Dataset dicts of :func:`~.coco_panoptic.load_find_coco_panoptic` plus, per image,
    ``grounding_info`` (when ``refs_file`` is given; ``[]`` for an image without refs) and
    ``entity_info`` (when ``entity_json`` is given; ``[]`` for an image without sentences)."""
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
    return dicts


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
    find_train_tasks: Optional[Sequence[str]] = None,
    find_eval_tasks: Optional[Sequence[str]] = None,
    find_eval_mapper: str = "find_panoptic_eval",
) -> None:
    """Register ``name`` (nothing is read until ``DatasetCatalog.get(name)``).

    ``metadata``: class lists and id maps (:func:`~.common.panoptic_metadata` of the categories).
    ``training``: declares ``find_train_tasks`` (default :func:`default_find_tasks`); an
    evaluation split declares none. ``require_captions`` (default: ``training`` and captions
    given) makes an image without a caption an error. ``MetadataCatalog.get(name)`` gets
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
