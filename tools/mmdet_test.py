#!/usr/bin/env python
"""Evaluate FIND with MMDetection / mmengine's Runner (mmdet's ``tools/test.py`` conventions).

    python tools/mmdet_test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    torchrun --nproc_per_node 8 tools/mmdet_test.py CONFIG CHECKPOINT --launcher pytorch

``CHECKPOINT``: an mmengine checkpoint of this config, or any file the detectron2 side reads
(find_plugin format, detectron2 ``model_final.pth``, an official FIND checkpoint, a model-zoo
name), loaded strictly (:func:`find_plugin.mmdet.weights.load_find_weights`; one key layout
``backbone.* / pixel_decoder.* / interface.*``, no key table). Prints the metrics of
``test_evaluator``.
"""

import argparse
import os
import os.path as osp
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Evaluate FIND (MMDetection)")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint: path, URL or model-zoo name")
    parser.add_argument("--work-dir", help="where logs and metrics go")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value"
    )
    parser.add_argument(
        "--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none", help="launcher"
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.runner import Runner

    from find_plugin.mmdet.weights import load_find_weights

    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from mmdet_train import build_cfg, init_cpu_dist

    cfg = build_cfg(args)
    cfg.load_from = None  # loaded below, strictly
    init_cpu_dist(cfg)  # --launcher pytorch without CUDA (gloo)
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    layout = load_find_weights(model, args.checkpoint)
    runner.logger.info("loaded %s (%s layout)", args.checkpoint, layout)
    return runner.test()


if __name__ == "__main__":
    main()
