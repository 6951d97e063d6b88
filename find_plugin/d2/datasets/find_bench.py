"""FIND-Bench entity sentences (COCO-Entity, COCO-Entity-Long; spec §5.1, §5.2) joined with COCO
panoptic by panoptic segment id.

Registered names (root ``$DETECTRON2_DATASETS``; nothing is read until ``DatasetCatalog.get``)::

    find_coco_entity_train2017      coco/annotations/entity_train2017.json      (training)
    find_coco_entity_val2017        coco/annotations/entity_val2017.json        (COCO-Entity)
    find_coco_entity_val2017_long   coco/annotations/entity_val2017_long.json   (COCO-Entity-Long)
    find_coco_interleave_val2017    coco/annotations/interleave_val2017.json    (visual references)
    find_coco_interleave_val2017_long   coco/annotations/interleave_val2017_long.json

on top of the COCO panoptic layout of :mod:`.coco_panoptic` (``coco/{split}``,
``coco/panoptic_{split}``, ``coco/annotations/panoptic_{split}.json``; captions joined when
``captions_{split}.json`` exists).

Entity file: ``images[]`` ``{id, file_name}``; ``annotations[]`` one per sentence ``{image_id,
sentence, sentence_raw, phrase: [{annotation_id, phrase, start_idx, end_idx, ...}]}``, where
``annotation_id`` is a panoptic segment id of the image and ``start_idx``/``end_idx`` a character
span of ``sentence``. A phrase may carry a cross-image ``reference: {image_id, annotation_id,
prob}`` (the ``interleave_*`` files of ``tools/build_interleave_references.py``): a segment of
ANOTHER image of the same split, whose full mask is the phrase's visual prompt in interleave
retrieval with visual references. ``sentence_raw`` (GPT-4 output) marks each phrase as
``[<segment id>]`` in front of its text.

Validation at load time (errors name the entity file, the annotation index and the phrase): the
span lies inside the sentence (``0 <= start < end <= len``) and phrases do not overlap; the
``annotation_id`` is a segment of that image's panoptic annotation; ``sentence_raw`` (when
present) has only well-formed ``[<digits>]`` markers and one for every phrase id.

Dataset dicts: those of :func:`~.coco_panoptic.load_find_coco_panoptic` plus ``entity_info``:
list of ``{"sentence", "phrases": [{"start", "end", "annotation_id", "phrase"}]}`` (phrases sorted
by ``start``, the order of the interleave task and of ``find_gt["interleave_masks"]``); a
phrase's ``reference`` is ``{"image_id", "annotation_id", "prob", "file_name",
"pan_seg_file_name"}`` (checked: another image of the panoptic json, one of its segments).
Evaluation splits keep only images with an entity sentence (the official gallery); training
keeps every image (an image without a sentence gets the interleave task's dummy entity).
"""

import functools
import os
from typing import Mapping, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...data.entities import parse_entity_annotations
from .coco_panoptic import coco_panoptic_metadata, coco_panoptic_paths, load_find_coco_panoptic
from .common import read_json

__all__ = [
    "PREDEFINED_FIND_COCO_ENTITY",
    "PREDEFINED_FIND_COCO_INTERLEAVE",
    "COCO_INTERLEAVE_EVAL_TASKS",
    "COCO_ENTITY_TRAIN_TASKS",
    "COCO_ENTITY_EVAL_TASKS",
    "parse_entity_annotations",
    "load_find_coco_entity",
    "register_find_coco_entity",
    "register_all_find_coco_entity",
]

#: name -> (COCO split, entity file name, training split)
PREDEFINED_FIND_COCO_ENTITY = {
    "find_coco_entity_train2017": ("train2017", "entity_train2017.json", True),
    "find_coco_entity_val2017": ("val2017", "entity_val2017.json", False),
    "find_coco_entity_val2017_long": ("val2017", "entity_val2017_long.json", False),
}

#: name -> (COCO split, references file): entity files with a cross-image ``reference`` per
#: phrase (``tools/build_interleave_references.py``; the official ones were never released).
PREDEFINED_FIND_COCO_INTERLEAVE = {
    "find_coco_interleave_val2017": ("val2017", "interleave_val2017.json"),
    "find_coco_interleave_val2017_long": ("val2017", "interleave_val2017_long.json"),
}

COCO_ENTITY_TRAIN_TASKS = ("generic", "grounding", "interactive", "interleave")
COCO_ENTITY_EVAL_TASKS = ("interleave", "interleave_retrieval")
COCO_INTERLEAVE_EVAL_TASKS = ("interleave_retrieval_visual",)


def load_find_coco_entity(
    name: str,
    metadata: Mapping,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    entity_json: str,
    captions_json: Optional[str] = None,
    keep_images_without_entities: bool = False,
) -> list:
    """COCO panoptic dataset dicts joined with ``entity_json`` (module docstring)."""
    if captions_json and not os.path.isfile(captions_json):
        captions_json = None  # captions are optional here
    dicts = load_find_coco_panoptic(
        name, metadata, image_root, panoptic_root, panoptic_json, None, captions_json, False
    )
    data = read_json(entity_json, dataset_name=name, what="FIND-Bench entity file")
    segment_ids = {d["image_id"]: {s["id"] for s in d["segments_info"]} for d in dicts}
    entities = parse_entity_annotations(entity_json, data, segment_ids, dataset_name=name)
    files = {d["image_id"]: d for d in dicts}
    for sentences in entities.values():
        for e in sentences:
            for p in e["phrases"]:
                if "reference" in p:  # where the mapper reads the reference image and mask
                    ref = files[p["reference"]["image_id"]]
                    p["reference"]["file_name"] = ref["file_name"]
                    p["reference"]["pan_seg_file_name"] = ref["pan_seg_file_name"]
    out = []
    for d in dicts:
        d["entity_info"] = entities.get(d["image_id"], [])
        if d["entity_info"] or keep_images_without_entities:
            out.append(d)
    if not out:
        raise ValueError(f"dataset {name!r}: {entity_json} has no sentence of any image")
    return out


def register_find_coco_entity(
    name: str,
    metadata: Mapping,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    entity_json: str,
    captions_json: Optional[str] = None,
    *,
    training: bool = False,
    find_train_tasks: Sequence[str] = COCO_ENTITY_TRAIN_TASKS,
    find_eval_tasks: Sequence[str] = COCO_ENTITY_EVAL_TASKS,
) -> None:
    """Register a FIND-Bench entity split (reads nothing until ``DatasetCatalog.get``).

    ``training=True`` keeps images without a sentence and declares ``find_train_tasks``;
    otherwise only images with a sentence, ``find_train_tasks=()``. Metadata: ``metadata``
    (panoptic class lists and id maps), ``image_root``, ``panoptic_root``, ``panoptic_json``,
    ``entity_json``, ``evaluator_type="find_grounding"``, ``find_eval_tasks``,
    ``find_eval_mapper="find_panoptic_eval"``."""
    DatasetCatalog.register(
        name,
        functools.partial(
            load_find_coco_entity,
            name,
            dict(metadata),
            image_root,
            panoptic_root,
            panoptic_json,
            entity_json,
            captions_json,
            training,
        ),
    )
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        entity_json=entity_json,
        captions_json=captions_json,
        evaluator_type="find_grounding",
        ignore_label=255,
        label_divisor=1000,
        find_train_tasks=tuple(find_train_tasks) if training else (),
        find_eval_tasks=tuple(find_eval_tasks),
        find_eval_mapper="find_panoptic_eval",
        **metadata,
    )


def register_all_find_coco_entity(root: str) -> None:
    """Register :data:`PREDEFINED_FIND_COCO_ENTITY` and :data:`PREDEFINED_FIND_COCO_INTERLEAVE`
    under ``root`` (reads no file)."""
    meta = coco_panoptic_metadata()
    splits = [
        (name, split, entity_file, dict(training=training))
        for name, (split, entity_file, training) in PREDEFINED_FIND_COCO_ENTITY.items()
    ] + [
        (name, split, references_file, dict(find_eval_tasks=COCO_INTERLEAVE_EVAL_TASKS))
        for name, (split, references_file) in PREDEFINED_FIND_COCO_INTERLEAVE.items()
    ]
    for name, split, entity_file, options in splits:
        p = coco_panoptic_paths(root, split)
        register_find_coco_entity(
            name,
            meta,
            p["image_root"],
            p["panoptic_root"],
            p["panoptic_json"],
            os.path.join(os.path.dirname(p["panoptic_json"]), entity_file),
            p["captions_json"],
            **options,
        )
