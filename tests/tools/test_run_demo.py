"""The main job end to end (CI's short version of ``bash tools/run_demo.sh``): a tiny demo
dataset, the untrained evaluation, a few iterations of tools/train_net.py, the evaluation of every
task, the table, metrics JSON, overlays and loss plot (CPU, about a minute)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from find_plugin.d2.demo_report import DEMO_METRICS, metrics_table
from tests._util import load_module

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _tool(name):
    return load_module(f"find_{name}", ROOT / "tools" / f"{name}.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    _tool("build_demo_dataset").build_demo_dataset(
        str(root), seed=0, num_train=12, num_val=10, progress=False
    )
    out = tmp_path_factory.mktemp("run_demo")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tools" / "run_demo.py")]
    cmd += ["--datasets-root", str(root), "--output-dir", str(out), "--num-overlays", "2"]
    cmd += ["--opts", "SOLVER.MAX_ITER", "4", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "(3,)"]
    cmd += [
        "SOLVER.WARMUP_ITERS",
        "1",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.FIND.TEST.INTERACTIVE_MAX_CLICKS",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, cwd=str(out), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "root": root, "stdout": proc.stdout, "stderr": proc.stderr}


def test_every_metric_is_evaluated_before_and_after_training(run):
    res = json.loads((run["out"] / "results.json").read_text())
    for part in ("untrained", "trained"):
        missing = [m.key for m in DEMO_METRICS if m.key not in res[part]]
        assert not missing, f"{part} lacks {missing}"
        assert all(np.isfinite(res[part][m.key]) for m in DEMO_METRICS if m.key != "segm/AP")
    assert res["chance"]["retrieval/ir1"] == pytest.approx(100.0 / 10)
    table = (run["out"] / "results.md").read_text()
    assert table.strip() == metrics_table(res).strip()
    assert len(table.strip().splitlines()) == 2 + len(DEMO_METRICS)
    assert "| referring cIoU |" in table and table.strip() in run["stdout"]


def test_training_ran_through_train_net_and_wrote_checkpoint_and_losses(run):
    out = run["out"]
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").is_file()
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r for r in rows)
    assert (out / "losses.png").stat().st_size > 1000
    assert "Starting training from iteration 0" in run["stdout"] + run["stderr"]


def test_overlays_are_written_for_every_prompt_kind(run):
    res = json.loads((run["out"] / "results.json").read_text())
    kinds = {os.path.basename(p).rsplit("_", 1)[1] for p in res["overlays"]}
    assert kinds == {"panoptic.png", "referring.png", "interactive.png", "interleave.png"}
    for p in res["overlays"]:
        img = np.asarray(Image.open(p))
        stem = os.path.basename(p).split("_")[0]
        src = np.asarray(Image.open(run["root"] / "find_demo" / "coco" / "val2017" / f"{stem}.jpg"))
        k = max(1, 384 // min(src.shape[:2]))  # small images are drawn enlarged
        assert img.shape == (src.shape[0] * k, src.shape[1] * k, 3)
