"""One training step of ``tools/train_net.py``'s Trainer with grounding and interleave enabled, on
a tiny COCO + FIND-Bench entity file in the real formats: every task's losses, all finite."""

import logging
import math
import pathlib

import pytest
from detectron2.utils.events import EventStorage

from find_plugin.d2 import datasets as ds
from tests._util import load_module as _load

HERE = pathlib.Path(__file__).parent


C = _load("_d2_conftest_tgi", HERE / "conftest.py")
tiny = _load("_d2_tiny_dataset_tgi", HERE / "tiny_dataset.py")
bench = _load("_d2_refcoco_find_bench_tgi", HERE / "test_d2_refcoco_find_bench.py")
train_net = _load("_find_train_net_tgi", HERE.parent.parent / "tools" / "train_net.py")

NAME = "find_test_tgi_entity_train"


@pytest.fixture(autouse=True)
def _restore_loggers():
    names = ["", "detectron2", "fvcore", "find_plugin", "d2"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    yield
    for n, (handlers, propagate) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).propagate = propagate


def test_one_trainer_step_returns_grounding_and_interleave_losses(tmp_path):
    info = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=3, seed=3)
    entity_json = bench.write_entities(info, "entity_train2017.json", images=3)
    p = info["paths"]
    ds.register_find_coco_entity(
        NAME,
        info["metadata"],
        p["image_root"],
        p["panoptic_root"],
        p["panoptic_json"],
        entity_json,
        p["captions_json"],
        training=True,
    )
    cfg = C.tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (NAME,), ()
    cfg.MODEL.FIND.TASKS.TRAIN = ["generic", "grounding", "interleave"]
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 2, 1, ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path / "output")
    trainer = train_net.Trainer(cfg)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
    latest = {k: v for k, (v, _) in storage.latest().items() if k.startswith("loss_")}
    final = {k for k in latest if not k[-1].isdigit()}
    assert final == {
        "loss_mask_ce",
        "loss_mask_bce",
        "loss_mask_dice",
        "loss_grounding_ce",
        "loss_grounding_bce",
        "loss_grounding_dice",
        "loss_interleave_ce",
        "loss_interleave_bce",
        "loss_interleave_dice",
        "loss_interleave_itc",
    }
    # deep supervision: every auxiliary layer of the mask terms too (2 layers -> _0, _1)
    assert {"loss_interleave_bce_0", "loss_grounding_dice_1"} <= set(latest)
    assert all(math.isfinite(v) for v in latest.values()), latest
    assert latest["loss_interleave_bce"] > 0 and latest["loss_grounding_bce"] > 0
