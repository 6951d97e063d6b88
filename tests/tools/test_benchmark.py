"""tools/benchmark.py --quick produces every figure, for one checkout and side by side, and writes
well-formed JSON (no timed assertion: the speed targets are checked by running the benchmark)."""

import json
import math
import pathlib
import sys

import pytest

from tests._util import load_module

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "benchmark.py"
QUICK = ["--quick", "--warmup", "0", "--gallery-sizes", "500", "1000", "--gallery-queries", "8"]


def _tool():
    return load_module("find_benchmark_tool", TOOL)


@pytest.fixture(scope="module")
def tool():
    return _tool()


def _figure_ok(entry: dict) -> None:
    assert entry["calls"] >= 1
    assert math.isfinite(entry["time_s"]) and entry["time_s"] > 0
    assert math.isfinite(entry["cpu_s"]) and entry["cpu_s"] >= 0
    assert entry["time_min_s"] <= entry["time_s"] <= entry["time_max_s"]
    assert math.isfinite(entry["mem_mb"]) and entry["mem_mb"] >= 0
    assert entry["facts"]["runs"]


def test_quick_run_reports_every_figure(tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert tool.main(QUICK + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())  # well-formed JSON
    expected = (
        [f"interface/{t}" for t in ("seg", "grounding", "spatial", "retrieval", "interleave")]
        + ["interface/fused", "vision/backbone", "vision/pixel_decoder", "image_path"]
        + ["train_step"]
        + [f"gallery/{k}/{n}" for n in (500, 1000) for k in ("exact", "faiss")]
    )
    assert [r["figure"] for r in report["results"]] == expected
    for r in report["results"]:
        _figure_ok(r["this"])
        if r["figure"].startswith("gallery/faiss"):
            assert 0.0 <= r["this"]["facts"]["recall@10"] <= 1.0
    assert "meta-architecture" in report["results"][8]["this"]["facts"]["runs"]
    s = report["settings"]
    assert s["quick"] and s["size"] == 64 and s["repeat"] == 1 and s["seed"] == 0
    assert report["machine"]["torch"] and report["machine"]["threads"] >= 1
    printed = capsys.readouterr().out
    assert "seed=0" in printed and "dtype=float32" in printed
    assert all(name in printed for name in expected)


def test_baseline_runs_both_sides_alternately_and_gives_ratios(tool, tmp_path):
    """The checkout itself as its 'baseline': both worker processes answer every figure."""
    out = tmp_path / "side.json"
    args = QUICK + ["--only", "interface", "--repeat", "2", "--baseline", str(ROOT)]
    assert tool.main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["checkouts"]) == {"this", "baseline"}
    assert len(report["results"]) == 6
    for r in report["results"]:
        for side in ("this", "baseline"):
            _figure_ok(r[side])
            assert len(r[side]["raw_times_s"]) == 2
        for key in ("ratio", "cpu_ratio"):
            lo, hi = r[f"{key}_range"]
            assert 0 < lo <= hi and r[key] > 0
        assert r["mem_ratio"] is None or r["mem_ratio"] >= 0


def test_bad_arguments_fail_clearly(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--size", "100"])
    with pytest.raises(SystemExit):
        tool.main(["--baseline", str(tmp_path)])  # no find_plugin there
    assert sys.modules.get("benchmark_workloads") is not None


def test_low_precision_runs_under_autocast(tool, tmp_path, capsys):
    """--dtype bfloat16 on CPU: the models stay float32 and every figure but the galleries runs
    under bf16 autocast; a dtype this torch cannot autocast to on CPU is refused clearly."""
    import torch

    W = sys.modules.get("benchmark_workloads") or load_module(
        "benchmark_workloads", ROOT / "tools" / "benchmark_workloads.py"
    )
    out = tmp_path / "bf16.json"
    args = QUICK + ["--dtype", "bfloat16", "--only", "interface", "image_path", "train_step"]
    assert tool.main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["dtype"] == "bfloat16" and len(report["results"]) == 8
    for r in report["results"]:
        _figure_ok(r["this"])
    assert "dtype=bfloat16" in capsys.readouterr().out
    w = W.Workloads(
        quick=True,
        size=64,
        dtype="bfloat16",
        device="cpu",
        seed=0,
        train_batch=1,
        gallery_queries=4,
    )
    assert w.iface.logit_scale.dtype == torch.float32 and w.autocast == torch.bfloat16
    seen = []
    w.setup("interface/seg")
    w.iface.register_forward_hook(lambda *a: seen.append(torch.is_autocast_cpu_enabled()))
    w.call("interface/seg")
    assert seen == [True]
    if not W.autocast_supported("cpu", torch.float16):
        with pytest.raises(SystemExit):
            tool.main(QUICK + ["--dtype", "float16"])
        assert "autocast" in capsys.readouterr().err
