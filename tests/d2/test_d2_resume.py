"""Resume after SIGKILL: a training run killed mid-training and restarted with ``--resume``
continues from its last checkpoint and its later losses equal an uninterrupted run's (same seed);
no checkpoint file is left truncated. Each run is a real ``tools/train_net.py`` trainer in its own
process (the kill is a real SIGKILL of that process)."""

import json
import os
import pathlib
import subprocess
import sys

import torch

HERE = pathlib.Path(__file__).parent
REPO = HERE.parent.parent

DRIVER = r"""
import importlib.util, json, os, signal, sys
sys.path.insert(0, {repo!r})

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

from detectron2.engine import HookBase, default_argument_parser
from find_plugin.d2.datasets import panoptic_metadata, register_find_coco_panoptic
train_net = load("train_net", os.path.join({repo!r}, "tools", "train_net.py"))
info = json.load(open(sys.argv[1]))
meta = panoptic_metadata(info["categories"])
register_find_coco_panoptic("find_test_resume_train", meta, **info["paths"])
kill_at = int(os.environ.get("FIND_TEST_KILL_AT", "-1"))

class Record(HookBase):
    def after_step(self):
        it = self.trainer.iter
        value = self.trainer.storage.history("total_loss").latest()
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({{"iter": it, "total_loss": value}}) + "\n")
        if it == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

class Trainer(train_net.Trainer):
    def build_hooks(self):
        return super().build_hooks() + [Record()]

args = default_argument_parser().parse_args(sys.argv[3:])
cfg = train_net.setup(args)
trainer = Trainer(cfg)
trainer.resume_or_load(resume=args.resume)
trainer.train()
"""


def _load(name, path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(root, out_dir):
    C = _load("_d2_conftest_resume", HERE / "conftest.py")
    cfg = C.tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("find_test_resume_train",), ()
    cfg.MODEL.FIND.TASKS.TRAIN = ["generic", "grounding", "interactive", "retrieval"]
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 2, 6, (4,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(out_dir)
    path = root / f"{out_dir.name}.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _train(root, name, *extra, kill_at=None):
    out_dir = root / name
    config = _config(root, out_dir)
    record = root / f"{name}.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if kill_at is not None:
        env["FIND_TEST_KILL_AT"] = str(kill_at)
    cmd = [sys.executable, str(root / "driver.py"), str(root / "info.json"), str(record)]
    res = subprocess.run(
        cmd + ["--config-file", config, *extra], env=env, capture_output=True, text=True
    )
    return res, out_dir, record


def _losses(record):
    out = {}
    for line in open(record):
        row = json.loads(line)
        out[row["iter"]] = row["total_loss"]
    return out


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    tiny = _load("_d2_tiny_dataset_resume", HERE / "tiny_dataset.py")
    info = tiny.write_tiny_coco(tmp_path, split="train2017", num_images=5, seed=3)
    info_json = {"paths": info["paths"], "categories": info["categories"]}
    (tmp_path / "info.json").write_text(json.dumps(info_json))
    (tmp_path / "driver.py").write_text(DRIVER.format(repo=str(REPO)))

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
