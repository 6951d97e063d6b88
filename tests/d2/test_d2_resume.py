"""Runs of the real trainer in their own processes (``train_driver.py``):

* resume after SIGKILL: a run killed mid-training and restarted with ``--resume`` continues from
  its last checkpoint and its later losses equal an uninterrupted run's (same seed); no checkpoint
  file is left truncated;
* distributed: two CPU processes (gloo, detectron2's ``launch``) with the same total batch give the
  losses of one process."""

import json
import os
import pathlib
import subprocess
import sys

import torch

from tests._util import load_module

HERE = pathlib.Path(__file__).parent
REPO = HERE.parent.parent


def _load(name, path):
    return load_module(name, path)


def _config(root, out_dir, **overrides):
    C = _load("_d2_conftest_resume", HERE / "conftest.py")
    cfg = C.tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("find_test_driver_train",), ()
    cfg.MODEL.FIND.TASKS.TRAIN = ["generic", "grounding", "interactive", "retrieval"]
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 2, 6, (4,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    path = root / f"{out_dir.name}.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _train(root, name, *extra, kill_at=None, overrides=None):
    out_dir = root / name
    config = _config(root, out_dir, **(overrides or {}))
    record = root / f"{name}.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if kill_at is not None:
        env["FIND_TEST_KILL_AT"] = str(kill_at)
    cmd = [sys.executable, str(HERE / "train_driver.py"), str(root / "info.json"), str(record)]
    res = subprocess.run(
        cmd + ["--config-file", config, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return res, out_dir, record


def _rows(record):
    return {row["iter"]: row for row in map(json.loads, open(record))}


def _losses(record):
    out = {}
    for line in open(record):
        row = json.loads(line)
        out[row["iter"]] = row["total_loss"]
    return out


def _write_data(tmp_path):
    tiny = _load("_d2_tiny_dataset_resume", HERE / "tiny_dataset.py")
    info = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=5, seed=3)
    info_json = {"paths": info["paths"], "categories": info["categories"]}
    (tmp_path / "info.json").write_text(json.dumps(info_json))


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    _write_data(tmp_path)

    full, _, full_record = _train(tmp_path, "full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed, out_dir, record = _train(tmp_path, "killed", kill_at=4)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL
    assert max(_losses(record)) == 4  # killed right after iteration 4
    with open(out_dir / "last_checkpoint") as f:
        last = f.read().strip()
    assert last == "model_0000003.pth"
    for name in os.listdir(out_dir):  # every checkpoint on disk is complete
        if name.endswith(".pth"):
            ckpt = torch.load(out_dir / name, map_location="cpu", weights_only=False)
            assert {"model", "trainer", "iteration", "find_state"} <= set(ckpt), name
    assert not [n for n in os.listdir(out_dir) if n.startswith(".tmp-")]

    resumed, _, _ = _train(tmp_path, "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = _losses(full_record), _losses(record)
    assert set(got) == set(range(6))
    for it in (4, 5):  # iterations run after the restart (iteration 4 is run again)
        assert abs(got[it] - want[it]) <= 1e-5 * max(1.0, abs(want[it])), (it, got[it], want[it])
    for it in range(4):
        assert abs(got[it] - want[it]) <= 1e-5 * max(1.0, abs(want[it])), it


# Settings that make the batches comparable: no aspect-ratio grouping (it composes batches
# per process: one process would batch other images together), every pixel in the mask losses
# (no random points),
# visual prompts below the point budget (no random point draws), no fine-grained retrieval term
# (not gathered across processes), so one process with batch 2 and two processes with batch 1
# each see the same images, augmentations and prompts and the same class bank (its refreshed
# rows are all-gathered). Remaining per-process terms: the background-weighted CE is a weighted
# mean per process, and the per-item mask losses are normalised by the local number of items (as
# in the official code), hence the tolerance.
DISTRIBUTED = {
    "DATALOADER.ASPECT_RATIO_GROUPING": False,
    "MODEL.FIND.LOSS.NUM_POINTS": 0,
    "MODEL.FIND.MATCHER.NUM_POINTS": 0,
    "MODEL.FIND.INTERFACE.MAX_SPATIAL_POINTS": 4096,
    "MODEL.FIND.TASKS.SPATIAL_CORRECTION_PROB": 0.0,
    "MODEL.FIND.LOSS.FINE_GRAINED_WEIGHT": 0.0,
    "SOLVER.MAX_ITER": 3,
}


def test_two_processes_give_the_losses_of_one(tmp_path):
    _write_data(tmp_path)
    one, _, one_record = _train(tmp_path, "one", overrides=DISTRIBUTED)
    assert one.returncode == 0, one.stderr[-3000:]
    two, _, two_record = _train(tmp_path, "two", "--num-gpus", "2", overrides=DISTRIBUTED)
    assert two.returncode == 0, two.stderr[-3000:]
    want, got = _losses(one_record), _losses(two_record)
    assert set(got) == set(want) == {0, 1, 2}
    for it in want:
        assert abs(got[it] - want[it]) <= 0.02 * abs(want[it]), (it, got[it], want[it])
    # Before any update differs, the terms that decompose over images are equal: the mask losses
    # (normaliser averaged over processes), grounding CE (mean over images) and the contrastive
    # retrieval loss (all-gathered).
    first_one, first_two = _rows(one_record)[0], _rows(two_record)[0]
    for name in ("loss_mask_bce", "loss_mask_dice", "loss_grounding_ce", "loss_retrieval_decoder"):
        a, b = first_one[name], first_two[name]
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (name, a, b)
