"""Framework-free data parsing shared by FIND's detectron2 and MMDetection adapters.

Imports only the standard library, numpy, torch and pycocotools (checked by
``tests/env/test_env_stack.py``):

* :mod:`.files`: JSON / existence checks with errors naming the dataset, COCO captions,
  panoptic PNG colour <-> id;
* :mod:`.safe_pickle`: plain-data pickles (RefCOCO's ``refs(*).p``) without running code;
* :mod:`.refcoco`: RefCOCO-style refs -> per-image ``grounding_info`` (and image files);
* :mod:`.karpathy`: Karpathy's retrieval split file -> images + captions;
* :mod:`.entities`: FIND-Bench entity files -> per-image ``entity_info``;
* :mod:`.records`: ``grounding_info`` / ``entity_info`` -> the task records' ``groundings`` /
  ``entities`` and the evaluation ground truth.
"""

from .entities import parse_entity_annotations
from .files import (
    datasets_root,
    id2rgb,
    load_captions,
    missing_files,
    read_json,
    require_file,
    rgb2id,
)
from .karpathy import load_karpathy_json
from .records import (
    decode_grounding_masks,
    decode_segmentation,
    entity_records,
    entity_segment_ids,
    grounding_records,
    interleave_ground_truth,
)
from .refcoco import check_images_joined, load_find_refcoco, load_grounding_info
from .safe_pickle import PLAIN_TYPES, UnsafePickleError, load_plain_pickle

__all__ = [
    "PLAIN_TYPES",
    "UnsafePickleError",
    "check_images_joined",
    "datasets_root",
    "decode_grounding_masks",
    "decode_segmentation",
    "entity_records",
    "entity_segment_ids",
    "grounding_records",
    "id2rgb",
    "interleave_ground_truth",
    "load_captions",
    "load_find_refcoco",
    "load_karpathy_json",
    "load_grounding_info",
    "load_plain_pickle",
    "missing_files",
    "parse_entity_annotations",
    "read_json",
    "require_file",
    "rgb2id",
]
