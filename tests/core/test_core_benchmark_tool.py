"""tools/benchmark_interface.py runs every task set and prints one figure line per set."""

import importlib.util
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "benchmark_interface.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("find_benchmark_interface", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_prints_a_line_per_task_set(capsys):
    tool = _load_tool()
    tasks = list(tool.TASK_SETS)
    args = ["--size", "128", "--hidden", "32", "--layers", "1", "--queries", "8", "--iters", "1"]
    assert tool.main(args + ["--warmup", "0", "--train", "--tasks", *tasks]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("FIND interface:") and "forward+backward" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == tasks
    assert all("median" in ln and "ms" in ln for ln in lines[1:])


def test_benchmark_rejects_bad_size():
    with pytest.raises(SystemExit):
        _load_tool().main(["--size", "100"])
