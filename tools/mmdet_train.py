#!/usr/bin/env python
"""Train FIND with MMDetection / mmengine's Runner (mmdet's ``tools/train.py`` conventions).

    python tools/mmdet_train.py projects/find_mmdet/configs/find_lite0_minilm_find-demo.py
    python tools/mmdet_train.py CONFIG --work-dir work_dirs/x --resume     # latest in work-dir
    python tools/mmdet_train.py CONFIG --amp --cfg-options train_cfg.max_iters=100
    torchrun --nproc_per_node 8 tools/mmdet_train.py CONFIG --launcher pytorch
    torchrun --nproc_per_node 2 tools/mmdet_train.py CONFIG --launcher pytorch \
        --cfg-options env_cfg.dist_cfg.backend=gloo                  # CPU (no CUDA)

On a machine without CUDA, ``--launcher pytorch`` starts the process group itself (mmengine's
launcher calls ``torch.cuda.set_device``) with ``env_cfg.dist_cfg.backend`` (must be ``gloo``)
and wraps the model in DDP without ``device_ids``.

The config must import the plugin (``custom_imports = dict(imports=['find_plugin.mmdet'],
allow_failed_imports=False)``); a config that does not gets an error saying so.
"""

import argparse
import os
import os.path as osp
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Train FIND (MMDetection)")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="where logs and checkpoints go")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", action="store_true", help="scale lr by batch size")
    parser.add_argument(
        "--resume",
        nargs="?",
        type=str,
        const="auto",
        help="resume from this checkpoint, or (no value) from the latest in the work dir",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config settings, key=value (e.g. train_cfg.max_iters=10)",
    )
    parser.add_argument(
        "--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none", help="launcher"
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def build_cfg(args):
    """The config of ``args`` with the command-line settings applied (mmdet's rules)."""
    from mmengine.config import Config

    from find_plugin.mmdet.config_check import check_find_config

    cfg = Config.fromfile(args.config)
    check_find_config(cfg, args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if getattr(args, "amp", False):
        wrapper = cfg.optim_wrapper.get("type", "OptimWrapper")
        if wrapper not in ("OptimWrapper", "AmpOptimWrapper"):
            raise ValueError(f"--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if getattr(args, "auto_scale_lr", False):
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise KeyError("--auto-scale-lr needs auto_scale_lr.base_batch_size in the config")
        cfg.auto_scale_lr.enable = True
    if getattr(args, "resume", None) == "auto":
        cfg.resume, cfg.load_from = True, None
    elif getattr(args, "resume", None) is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.launcher != "none" and not _cuda():
        # DDP on CPU takes no device_ids (mmengine passes [LOCAL_RANK] unless the config says)
        cfg.model_wrapper_cfg = dict(cfg.get("model_wrapper_cfg") or {}, device_ids=None)
    return cfg


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def init_cpu_dist(cfg) -> None:
    """``--launcher pytorch`` without CUDA: start the process group with the config's
    ``env_cfg.dist_cfg.backend`` (gloo), which mmengine's launcher cannot (it sets a CUDA
    device); the Runner then finds it started."""
    import torch.distributed as dist

    if cfg.launcher != "pytorch" or _cuda() or dist.is_initialized():
        return
    backend = cfg.get("env_cfg", {}).get("dist_cfg", {}).get("backend", "nccl")
    if backend != "gloo":
        raise ValueError(
            f"--launcher pytorch without CUDA needs env_cfg.dist_cfg.backend='gloo' (got "
            f"{backend!r}): --cfg-options env_cfg.dist_cfg.backend=gloo"
        )
    dist.init_process_group(backend="gloo")


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    from mmdet.utils import setup_cache_size_limit_of_dynamo
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    setup_cache_size_limit_of_dynamo()
    init_cpu_dist(cfg)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    runner.train()
    return runner


if __name__ == "__main__":
    main()
