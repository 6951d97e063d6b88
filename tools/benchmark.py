#!/usr/bin/env python
"""Benchmark FIND: time and working memory of the interface (per task and all tasks fused), the
vision side, the whole image path, a training iteration and retrieval galleries; optionally side by
side with another checkout.

    python tools/benchmark.py                           # full Focal-T size, 640x640, CPU
    python tools/benchmark.py --baseline /work/wt-baseline --threads 2 --repeat 7
    python tools/benchmark.py --quick --json out.json   # every figure at tiny sizes, seconds
    python tools/benchmark.py --device cuda --dtype bfloat16 --only interface   # bf16 autocast

Every figure is one call, repeated ``--repeat`` times after ``--warmup`` calls; the table gives
the median and the range (min-max) of the wall-clock time, and the median working memory of
``--memory-calls`` further calls made for it (CPU: peak RSS over the call minus RSS before it,
freed heap memory given back first; CUDA: ``max_memory_allocated`` minus the allocation before
it). Memory is measured on calls of its own because giving the heap back makes the next call
fault its whole working set in again, which repeated calls do not pay. The workloads are
described in ``tools/benchmark_workloads.py``. ``--dtype float16|bfloat16`` runs the figures
(but the galleries) under ``torch.autocast`` of that dtype, the models staying float32.

``--baseline DIR`` runs the same figures from the checkout DIR (e.g. ``git worktree add
/tmp/base <commit>``): both sides run in their own worker process (``PYTHONPATH`` = their
checkout, same seeds, threads and sizes), called alternately, one call each per round, in the
order A B, B A, A B, ... (each side follows the other as often as itself), so that load from
other processes and each side's effect on the next call hit both alike; the table adds the
ratio this / baseline of the medians and its range over the repeat rounds, for wall-clock time,
CPU time of the process (steadier when other processes share the cores) and working memory.
Figures the older checkout cannot run are reported as skipped.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import benchmark_workloads as W  # noqa: E402
import torch  # noqa: E402

GROUPS = ("interface", "vision", "image_path", "train_step", "gallery")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model and sizes (seconds)")
    p.add_argument("--size", type=int, default=None, help="image side (default 640; quick 64)")
    p.add_argument("--train-batch", type=int, default=None, help="default 2 (quick 1)")
    p.add_argument("--gallery-sizes", type=int, nargs="+", default=None, help="default 1e4 1e5 1e6")
    p.add_argument("--gallery-queries", type=int, default=None, help="recall queries (100)")
    p.add_argument("--repeat", type=int, default=None, help="timed calls per figure (5; quick 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--memory-calls", type=int, default=1, help="untimed calls for working memory (1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="float32, or autocast to float16 / bfloat16 (models stay float32)",
    )
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=None, help="figure groups")
    p.add_argument("--baseline", default=None, help="another checkout to compare with")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.size = args.size or (64 if quick else 640)
    args.train_batch = args.train_batch or (1 if quick else 2)
    args.gallery_sizes = args.gallery_sizes or ([1000, 4000] if quick else [10**4, 10**5, 10**6])
    args.gallery_queries = args.gallery_queries or (20 if quick else 100)
    args.repeat = args.repeat or (1 if quick else 5)
    args.device = args.device or "cpu"
    if args.memory_calls < 1:
        p.error(f"--memory-calls must be at least 1, got {args.memory_calls}")
    if args.size % 32:
        p.error(f"--size must be a multiple of 32, got {args.size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    device_type = torch.device(args.device).type
    if args.dtype != "float32" and not W.autocast_supported(
        device_type, getattr(torch, args.dtype)
    ):
        p.error(
            f"--dtype {args.dtype}: torch {torch.__version__} has no {device_type} autocast to "
            f"{args.dtype} (CPU autocast supports bfloat16)"
        )
    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "find_plugin")):
        p.error(f"--baseline {args.baseline}: no find_plugin package in that directory")
    return args


def _workload_kwargs(args) -> dict:
    return dict(
        quick=args.quick,
        size=args.size,
        dtype=args.dtype,
        device=args.device,
        seed=args.seed,
        train_batch=args.train_batch,
        gallery_queries=args.gallery_queries,
    )


def _configure(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


# ---------------------------------------------------------------------------------------------
# sides: in-process, or a worker process speaking JSON lines
# ---------------------------------------------------------------------------------------------
class LocalSide:
    """This checkout, in this process."""

    def __init__(self, args):
        self.name = "this"
        self.w = W.Workloads(**_workload_kwargs(args))
        self.root = os.path.dirname(os.path.dirname(self.w.root))

    def request(self, cmd: str, figure: Optional[str] = None) -> dict:
        return _serve(self.w, cmd, figure)

    def close(self):
        pass


def _serve(w, cmd: str, figure: Optional[str]) -> dict:
    try:
        if cmd == "setup":
            return {"ok": True, "facts": w.setup(figure)}
        if cmd == "call":
            return {"ok": True, **w.call(figure)}
        if cmd == "measure":
            return {"ok": True, **w.measure(figure)}
        if cmd == "release":
            w.release(figure)
            return {"ok": True}
    except W.Unsupported as err:
        return {"ok": False, "skipped": str(err)}
    except Exception as err:  # an older checkout may lack an API: skip the figure, say why
        if cmd != "setup":
            raise
        return {"ok": False, "skipped": f"{type(err).__name__}: {err}"}
    raise ValueError(f"unknown worker command {cmd!r}")


WORKER_OMP_WAIT_POLICY = "PASSIVE"


class WorkerSide:
    """A checkout in its own process (``PYTHONPATH`` = that checkout)."""

    def __init__(self, name: str, root: str, argv: List[str]):
        self.name, self.root = name, os.path.abspath(root)
        env = dict(os.environ, PYTHONPATH=self.root)
        # Idle OpenMP threads that spin-wait take cores from the other side's call right after
        # a switch of sides, which slows the side with the many short parallel regions (seen
        # here: 3.3-3.7 s alternating vs 2.8 s alone for the same call); passive waiting gives
        # each side the times it has alone (OMP_WAIT_POLICY set by the caller wins).
        env.setdefault("OMP_WAIT_POLICY", WORKER_OMP_WAIT_POLICY)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", *argv]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd=self.root
        )
        hello = self._read()
        if not hello.get("ok") or not hello["find_plugin"].startswith(self.root):
            raise RuntimeError(f"worker for {root} imported {hello.get('find_plugin')}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker for {self.root} died (see its stderr above)")
        return json.loads(line)

    def request(self, cmd: str, figure: Optional[str] = None) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, "figure": figure}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def worker_main(args) -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to stderr, the protocol to the saved stdout
    _configure(args)
    w = W.Workloads(**_workload_kwargs(args))
    out.write(json.dumps({"ok": True, "find_plugin": w.root}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        out.write(json.dumps(_serve(w, req["cmd"], req["figure"])) + "\n")
        out.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _summary(calls: List[dict], probes: List[dict]) -> dict:
    times = [c["time_s"] for c in calls]
    return {
        "time_s": statistics.median(times),
        "cpu_s": statistics.median(c["cpu_s"] for c in calls),
        "time_min_s": min(times),
        "time_max_s": max(times),
        "mem_mb": statistics.median(p["mem_mb"] for p in probes),
        "calls": len(calls),
        "memory_calls": len(probes),
    }


def run_figure(figure: str, sides, args) -> dict:
    res: Dict[str, dict] = {"figure": figure}
    live = []
    for side in sides:
        r = side.request("setup", figure)
        if r["ok"]:
            res[side.name] = {"facts": r["facts"], "calls": []}
            live.append(side)
        else:
            res[side.name] = {"skipped": r["skipped"]}
    for _ in range(args.warmup):
        for side in live:
            side.request("call", figure)
    for r in range(args.repeat):  # alternate: one call of each side per round
        # in the order A B, B A, A B, ...: each side follows the other as often as itself (a
        # call's memory churn slows the next call, whichever side that is)
        for side in live if r % 2 == 0 else live[::-1]:
            res[side.name]["calls"].append(side.request("call", figure))
    probes = {side.name: [] for side in live}
    for _ in range(args.memory_calls):  # after the timed calls: their trim would slow those
        for side in live:
            probes[side.name].append(side.request("measure", figure))
    for side in live:
        side.request("release", figure)
        calls = res[side.name].pop("calls")
        res[side.name].update(
            _summary(calls, probes[side.name]),
            raw_times_s=[c["time_s"] for c in calls],
            raw_cpu_s=[c["cpu_s"] for c in calls],
        )
    if len(live) == 2:
        a, b = (res[s.name]["raw_times_s"] for s in live)
        per_round = sorted(x / y for x, y in zip(a, b))
        res["ratio"] = res[live[0].name]["time_s"] / res[live[1].name]["time_s"]
        res["ratio_range"] = [per_round[0], per_round[-1]]
        a, b = (res[s.name]["raw_cpu_s"] for s in live)
        per_round = sorted(x / y for x, y in zip(a, b))
        res["cpu_ratio"] = res[live[0].name]["cpu_s"] / res[live[1].name]["cpu_s"]
        res["cpu_ratio_range"] = [per_round[0], per_round[-1]]
        mb = res[live[1].name]["mem_mb"]
        res["mem_ratio"] = res[live[0].name]["mem_mb"] / mb if mb > 0 else None
    return res


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt_row(r: dict, names: List[str]) -> str:
    cells = [f"{r['figure']:<26s}"]
    for n in names:
        s = r.get(n, {})
        if "skipped" in s:
            cells.append(f"{'skipped':>30s}")
            continue
        cells.append(
            f"{s['time_s'] * 1e3:10.1f} ({s['time_min_s'] * 1e3:.0f}-{s['time_max_s'] * 1e3:.0f})"
            f" {s['mem_mb']:7.1f}"
        )
    if "ratio" in r:
        lo, hi = r["ratio_range"]
        clo, chi = r["cpu_ratio_range"]
        mem = f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") is not None else "-"
        cells.append(
            f"{r['ratio']:6.2f} ({lo:.2f}-{hi:.2f})  cpu {r['cpu_ratio']:.2f} ({clo:.2f}-{chi:.2f})"
            f"  mem {mem}"
        )
    return " ".join(cells)


def print_table(results: List[dict], names: List[str], header: dict) -> None:
    print(" | ".join(f"{k}={v}" for k, v in header.items()))
    cols = "".join(f" {n + ': ms median (range) MB':>30s}" for n in names)
    ratio = "   ratio this/baseline: wall (range), cpu (range), memory"
    print(f"{'figure':<26s}{cols}" + (ratio if len(names) > 1 else ""))
    for r in results:
        print(_fmt_row(r, names))
        for n in names:
            facts = r.get(n, {}).get("facts", {})
            extra = {k: v for k, v in facts.items() if k not in ("runs",)}
            if extra:
                print(f"{'':<28s}{n}: " + ", ".join(f"{k}={_short(v)}" for k, v in extra.items()))


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    _configure(args)
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--worker"]
    if args.baseline:
        # both sides in worker processes, so that neither gets an advantage from being in-process
        sides = [
            WorkerSide("this", ROOT, _strip_baseline(passthrough)),
            WorkerSide("baseline", args.baseline, _strip_baseline(passthrough)),
        ]
    else:
        sides = [LocalSide(args)]
    try:
        figures = W.figure_names(args.gallery_sizes)
        if args.only:
            figures = [f for f in figures if f.split("/")[0] in args.only]
        t0 = time.perf_counter()
        results = []
        for f in figures:  # progress on stderr: a full run takes a while
            results.append(run_figure(f, sides, args))
            print(_fmt_row(results[-1], [s.name for s in sides]), file=sys.stderr, flush=True)
        settings = {
            k: getattr(args, k)
            for k in (
                "quick",
                "size",
                "dtype",
                "device",
                "seed",
                "threads",
                "warmup",
                "repeat",
                "memory_calls",
                "train_batch",
                "gallery_sizes",
                "gallery_queries",
                "baseline",
            )
        }
        settings["threads"] = args.threads or torch.get_num_threads()
        if args.baseline:
            settings["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", WORKER_OMP_WAIT_POLICY)
        report = {
            "settings": settings,
            "machine": machine(),
            "checkouts": {s.name: s.root for s in sides},
            "results": results,
            "wall_s": time.perf_counter() - t0,
        }
    finally:
        for s in sides:
            s.close()
    header = {k: v for k, v in settings.items() if v is not None}
    header.update(cpu=report["machine"]["cpu"], torch=report["machine"]["torch"])
    print_table(results, [s.name for s in sides], header)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _strip_baseline(argv: List[str]) -> List[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--baseline":
            skip = True
            continue
        if a.startswith("--baseline=") or a == "--json" or a.startswith("--json="):
            skip = a == "--json"
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
