#!/usr/bin/env python
"""FIND's main job on the demo dataset: build the data if missing, evaluate the untrained model,
train with ``tools/train_net.py`` (detectron2's trainer), evaluate every task, and write one
results table beside the untrained figures and chance, overlay pictures and a loss plot.

    python tools/run_demo.py                                 # output/find_demo
    python tools/run_demo.py --output-dir /tmp/demo --opts SOLVER.MAX_ITER 20   # a short run

``bash tools/run_demo.sh`` (the README's first command) sets up the environment and runs this.
Outputs under ``--output-dir``: ``model_final.pth`` (+ detectron2's ``metrics.json``, ``log.txt``),
``untrained/`` (evaluation of the untrained model), ``results.json`` (untrained, trained, chance,
targets), ``results.md`` (the table, also printed), ``overlays/*.png`` (panoptic, referring,
interactive and interleave predictions of a few val images), ``losses.png``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tools")):
    if path not in sys.path:  # run from a checkout without installing
        sys.path.insert(0, path)

from find_plugin.checkpoint.format import atomic_write  # noqa: E402
from find_plugin.d2.datasets import datasets_root, demo_paths, register_find_demo  # noqa: E402
from find_plugin.d2.demo_report import (  # noqa: E402
    DEMO_METRICS,
    chance_levels,
    flatten_results,
    metrics_table,
    plot_losses,
    write_overlays,
)

CONFIG = os.path.join(ROOT, "configs", "find_demo.yaml")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default=CONFIG)
    p.add_argument("--output-dir", default="output/find_demo")
    p.add_argument("--datasets-root", default=None, help="default: $DETECTRON2_DATASETS")
    p.add_argument("--num-overlays", type=int, default=4, help="val images drawn")
    p.add_argument("--skip-untrained", action="store_true", help="no untrained evaluation")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config KEY VALUE pairs")
    return p


def ensure_dataset(root: str) -> None:
    """Build the demo dataset under ``root`` unless its last file is already there."""
    paths = demo_paths(root)
    if os.path.isfile(paths["refcoco_instances_json"]) and os.path.isfile(
        paths["val"]["panoptic_json"]
    ):
        print(f"[run_demo] demo dataset found under {paths['base']}")
        return
    from build_demo_dataset import build_demo_dataset

    print(f"[run_demo] building the demo dataset under {paths['base']}")
    build_demo_dataset(root)


def load_cfg(args, output_dir: str):
    from detectron2.config import get_cfg

    from find_plugin.d2 import add_find_config

    cfg = get_cfg()
    add_find_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + ["OUTPUT_DIR", output_dir])
    if not cfg.MODEL.FIND.LANGUAGE.CACHE_DIR or not os.path.isabs(
        cfg.MODEL.FIND.LANGUAGE.CACHE_DIR
    ):
        # one text cache per output folder (the frozen text features of both evaluations + training)
        cfg.MODEL.FIND.LANGUAGE.CACHE_DIR = os.path.join(output_dir, "text_cache")
    cfg.freeze()
    return cfg


def evaluate_untrained(cfg) -> dict:
    """Every registered evaluator of ``cfg.DATASETS.TEST`` on the freshly initialised model (the
    same seed as training, so it is the model training starts from)."""
    import torch
    from detectron2.utils.logger import setup_logger
    from train_net import Trainer

    setup_logger(name="find_plugin")
    setup_logger(name="detectron2")
    torch.manual_seed(cfg.SEED)
    model = Trainer.build_model(cfg)
    untrained = cfg.clone()
    untrained.defrost()
    untrained.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "untrained")
    untrained.freeze()
    return Trainer.test(untrained, model)


def train(args, cfg) -> None:
    """``tools/train_net.py`` in a subprocess: detectron2's trainer with its progress, ETA and
    final evaluation (the EvalHook writes the metrics into ``metrics.json``)."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py")]
    cmd += ["--config-file", args.config_file] + list(args.opts)
    cmd += ["OUTPUT_DIR", cfg.OUTPUT_DIR, "MODEL.FIND.LANGUAGE.CACHE_DIR"]
    cmd += [cfg.MODEL.FIND.LANGUAGE.CACHE_DIR]
    print("[run_demo] training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def trained_results(output_dir: str) -> dict:
    """The evaluation written by the trainer's EvalHook: the last line of ``metrics.json`` that
    holds evaluation keys (``task/metric``)."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: did the training run finish?")
    last = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            evals = {k: v for k, v in row.items() if "/" in k and not k.startswith(("loss", "lr"))}
            if evals:
                last = evals
    if not last:
        raise ValueError(f"{path} holds no evaluation (TEST.EVAL_PERIOD / DATASETS.TEST?)")
    return last


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    t0 = time.time()
    root = args.datasets_root or datasets_root()
    os.environ["DETECTRON2_DATASETS"] = root  # the trainer subprocess registers the same root
    ensure_dataset(root)
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    cfg = load_cfg(args, output_dir)
    register_find_demo(root, overwrite=True)  # this root, whatever the import registered

    untrained = {}
    if not args.skip_untrained:
        t = time.time()
        untrained = flatten_results(evaluate_untrained(cfg))
        print(f"[run_demo] untrained evaluation: {time.time() - t:.0f} s", flush=True)
    t = time.time()
    train(args, cfg)
    print(f"[run_demo] training + evaluation: {time.time() - t:.0f} s", flush=True)
    trained = trained_results(output_dir)

    val = cfg.DATASETS.TEST[0]
    results = {
        "dataset": val,
        "untrained": untrained,
        "trained": trained,
        "chance": chance_levels(val),
        "metrics": [list(m) for m in DEMO_METRICS],
        "config": args.config_file,
        "opts": list(args.opts),
    }
    table = metrics_table(results)
    plot_losses(os.path.join(output_dir, "metrics.json"), os.path.join(output_dir, "losses.png"))
    overlays = write_overlays(
        cfg, os.path.join(output_dir, "model_final.pth"), val, output_dir, args.num_overlays
    )
    results["seconds"] = round(time.time() - t0, 1)
    results["overlays"] = overlays
    for name, text in (("results.json", json.dumps(results, indent=2)), ("results.md", table)):
        atomic_write(os.path.join(output_dir, name), lambda f, t=text: f.write(t.encode() + b"\n"))
    print("\n" + table)
    print(f"\n[run_demo] done in {results['seconds']:.0f} s; outputs in {output_dir}")
    return results


if __name__ == "__main__":
    main()
