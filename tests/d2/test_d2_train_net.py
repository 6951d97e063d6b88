"""``tools/train_net.py`` end to end on a tiny real-format COCO dataset (CPU): a few training
iterations through detectron2's trainer, evaluation with the registered evaluators, and
``--eval-only`` on the saved checkpoint giving the same metrics twice (seeded)."""

import json
import logging
import os
import pathlib

import pytest
from detectron2.engine import default_argument_parser

from find_plugin.d2.datasets import register_find_coco_panoptic
from tests._util import load_module as _load

HERE = pathlib.Path(__file__).parent


C = _load("_d2_conftest_train", HERE / "conftest.py")
tiny = _load("_d2_tiny_dataset_train", HERE / "tiny_dataset.py")
train_net = _load("_find_train_net", HERE.parent.parent / "tools" / "train_net.py")

TRAIN, VAL = "find_test_train_net_train", "find_test_train_net_val"


@pytest.fixture(autouse=True)
def _restore_loggers():
    """default_setup / setup_logger reconfigure process-wide loggers (handlers, propagate=False);
    put them back so later tests see the usual logging."""
    names = ["", "detectron2", "fvcore", "find_plugin", "d2"]
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).propagate,
            logging.getLogger(n).level,
        )
        for n in names
    }
    yield
    for n, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers
        lg.propagate, lg.level = propagate, level


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_coco")
    train = tiny.write_tiny_coco(root, split="train2017", num_images=4, seed=0)
    val = tiny.write_tiny_coco(root, split="val2017", num_images=3, seed=1, first_image_id=100)
    from detectron2.data import DatasetCatalog

    if TRAIN not in DatasetCatalog.list():
        register_find_coco_panoptic(TRAIN, train["metadata"], **train["paths"])
        register_find_coco_panoptic(
            VAL,
            val["metadata"],
            **val["paths"],
            find_eval_tasks=("generic", "interactive"),
        )
    cfg = C.tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN,), (VAL,)
    cfg.MODEL.FIND.TASKS.TRAIN = ["generic", "grounding", "interactive", "retrieval"]
    cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 48, 64
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 2, 3, (2,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(root / "output")
    config_file = root / "tiny.yaml"
    config_file.write_text(cfg.dump())
    return root, str(config_file), cfg.OUTPUT_DIR


def _run(config_file, *extra):
    args = default_argument_parser().parse_args(["--config-file", config_file, *extra])
    return train_net.main(args)


def test_train_then_eval_only_twice_gives_identical_metrics(tiny_run):
    root, config_file, out_dir = tiny_run
    _run(config_file)
    assert {"last_checkpoint", "model_final.pth", "model_0000001.pth"} <= set(os.listdir(out_dir))
    with open(os.path.join(out_dir, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    assert not [n for n in os.listdir(out_dir) if n.startswith(".tmp-")]
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    assert any("loss_mask_ce" in m for m in metrics)
    weights = os.path.join(out_dir, "model_final.pth")
    first = _run(config_file, "--eval-only", "MODEL.WEIGHTS", weights)
    second = _run(config_file, "--eval-only", "MODEL.WEIGHTS", weights)
    assert set(first) >= {"panoptic_seg", "sem_seg", "interactive"}, first
    # identical numbers (NaN where a class is absent: compare the serialised results)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert 0.0 <= first["interactive"]["miou@iter1"] <= 1.0


def test_one_training_step_from_the_real_loaders(tiny_run):
    """detectron2's own loader over the registered tiny dataset + the FIND training mapper ->
    one step under EventStorage: every enabled task's losses, finite, gradients only on the
    trainable parameters."""
    import torch
    from detectron2.data import DatasetCatalog, build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from find_plugin.d2.mappers import build_find_mapper

    cfg = C.tiny_cfg()
    cfg.DATASETS.TRAIN = (TRAIN,)
    cfg.MODEL.FIND.TASKS.TRAIN = ["generic", "grounding", "interactive", "retrieval"]
    cfg.INPUT.IMAGE_SIZE = 64
    dicts = DatasetCatalog.get(TRAIN)
    loader = build_detection_train_loader(
        dicts, mapper=build_find_mapper(cfg, True), total_batch_size=2, num_workers=0
    )
    batch = next(iter(loader))
    assert all("find_samples" in x and x["image"].dtype == torch.uint8 for x in batch)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(batch)
    final = {k[len("loss_") :].rsplit("_", 1)[0] for k in losses if not k[-1].isdigit()}
    assert final == {"mask", "grounding", "spatial", "retrieval"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) <= p.requires_grad, name  # no gradient on frozen parts
    assert model.interface.lang_proj.grad.abs().sum() > 0
