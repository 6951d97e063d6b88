"""FIND's detectron2 datasets. Importing this package registers (lazily: no file is read until
``DatasetCatalog.get``), under ``$DETECTRON2_DATASETS`` (default ``./datasets``):

* ``find_coco_2017_train_panoptic_caption`` and ``find_coco_2017_val_panoptic_with_sem_seg``
  (COCO panoptic + semantic PNGs + captions, :mod:`.coco_panoptic`);
* ``find_coco_karpathy_test`` and ``find_coco_karpathy_val`` (retrieval, :mod:`.karpathy`);
* ``find_refcocog_umd_{train,val,test}``, ``find_refcoco_unc_{train,val,testA,testB}``,
  ``find_refcocoplus_unc_{train,val,testA,testB}`` (referring segmentation, :mod:`.refcoco`);
* ``find_coco_entity_train2017``, ``find_coco_entity_val2017``, ``find_coco_entity_val2017_long``
  (FIND-Bench interleave sentences joined with COCO panoptic, :mod:`.find_bench`);
* ``find_coco_2017_train_joined``: COCO train2017 panoptic + captions + RefCOCOg (umd) train refs +
  COCO-Entity train sentences on each image, every task at once (what ``find_focalt.yaml`` trains);
* ``find_demo_train``, ``find_demo_val``, ``find_demo_karpathy_test`` (the demo dataset of
  ``tools/build_demo_dataset.py``, :mod:`.demo`).

Your own data: :func:`register_find_dataset` (COCO panoptic format + optional captions, refs and
entity sentences, joined per image; ``docs/custom_dataset.md``) with :func:`panoptic_metadata`
of its categories, or :func:`register_find_karpathy` for a retrieval-only split.
"""

import functools
import os

from .coco_panoptic import (
    COCO_PANOPTIC_TRAIN_TASKS,
    PREDEFINED_FIND_COCO_PANOPTIC,
    coco_panoptic_metadata,
    coco_panoptic_paths,
    load_find_coco_panoptic,
    register_all_find_coco_panoptic,
    register_find_coco_panoptic,
)
from .common import datasets_root, id2rgb, load_captions, panoptic_metadata, rgb2id
from .demo import DEMO_SPLITS, demo_metadata, demo_paths, register_find_demo
from .find_bench import (
    COCO_ENTITY_EVAL_TASKS,
    COCO_ENTITY_TRAIN_TASKS,
    PREDEFINED_FIND_COCO_ENTITY,
    load_find_coco_entity,
    parse_entity_annotations,
    register_all_find_coco_entity,
    register_find_coco_entity,
)
from .find_dataset import (
    default_find_tasks,
    held_out_image_ids,
    load_find_dataset,
    register_find_dataset,
)
from .karpathy import (
    KARPATHY_SPLITS,
    karpathy_paths,
    load_karpathy_json,
    register_all_find_karpathy,
    register_find_karpathy,
)
from .refcoco import (
    PREDEFINED_FIND_REFCOCO,
    load_find_refcoco,
    load_grounding_info,
    refcoco_paths,
    register_all_find_refcoco,
    register_find_refcoco,
)
from .safe_pickle import UnsafePickleError, load_plain_pickle

__all__ = [
    "DEMO_SPLITS",
    "default_find_tasks",
    "held_out_image_ids",
    "demo_metadata",
    "demo_paths",
    "load_find_dataset",
    "register_find_dataset",
    "register_find_demo",
    "register_find_coco_joined",
    "COCO_PANOPTIC_TRAIN_TASKS",
    "KARPATHY_SPLITS",
    "PREDEFINED_FIND_COCO_PANOPTIC",
    "coco_panoptic_metadata",
    "coco_panoptic_paths",
    "datasets_root",
    "id2rgb",
    "karpathy_paths",
    "load_captions",
    "load_find_coco_panoptic",
    "load_karpathy_json",
    "panoptic_metadata",
    "register_all_find_coco_panoptic",
    "register_all_find_karpathy",
    "register_find_coco_panoptic",
    "register_find_karpathy",
    "rgb2id",
    "COCO_ENTITY_EVAL_TASKS",
    "COCO_ENTITY_TRAIN_TASKS",
    "PREDEFINED_FIND_COCO_ENTITY",
    "PREDEFINED_FIND_REFCOCO",
    "UnsafePickleError",
    "load_find_coco_entity",
    "load_find_refcoco",
    "load_plain_pickle",
    "load_grounding_info",
    "parse_entity_annotations",
    "refcoco_paths",
    "register_all_find_coco_entity",
    "register_all_find_refcoco",
    "register_find_coco_entity",
    "register_find_refcoco",
]


def _register_builtin() -> None:
    from detectron2.data import DatasetCatalog

    root = datasets_root()
    # Importing twice (e.g. importlib.reload in tests) must not hit the catalog's duplicate check.
    if "find_coco_2017_val_panoptic_with_sem_seg" not in DatasetCatalog.list():
        register_all_find_coco_panoptic(root)
    if "find_coco_karpathy_test" not in DatasetCatalog.list():
        register_all_find_karpathy(root)
    if "find_refcocog_umd_val" not in DatasetCatalog.list():
        register_all_find_refcoco(root)
    if "find_coco_entity_val2017" not in DatasetCatalog.list():
        register_all_find_coco_entity(root)
    if "find_coco_2017_train_joined" not in DatasetCatalog.list():
        register_find_coco_joined(root)
    if "find_demo_val" not in DatasetCatalog.list():
        register_find_demo(root)


def register_find_coco_joined(root: str, name: str = "find_coco_2017_train_joined") -> None:
    """Register COCO train2017 panoptic + captions + RefCOCOg (umd) train refs + COCO-Entity train
    sentences, joined per image (spec §4 training data), under ``root`` (reads no file). As the
    official set (``*_filtrefgumdval_filtvlp``), the images of the RefCOCOg-umd val / test refs
    and of the Karpathy val / test splits (``coco/annotations/dataset_coco.json``) are left out."""
    coco = coco_panoptic_paths(root, "train2017")
    refs = refcoco_paths(root, "refcocog", "umd")
    register_find_dataset(
        name,
        coco_panoptic_metadata(),
        training=True,
        **coco,
        refs_file=refs["refs_file"],
        refs_instances_json=refs["instances_json"],
        refs_split="train",
        entity_json=os.path.join(os.path.dirname(coco["panoptic_json"]), "entity_train2017.json"),
        exclude_images=functools.partial(
            held_out_image_ids,
            name,
            refs_file=refs["refs_file"],
            karpathy_json=karpathy_paths(root)["json_file"],
        ),
    )


_register_builtin()
