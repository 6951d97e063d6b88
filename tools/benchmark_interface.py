#!/usr/bin/env python
"""Benchmark the FIND interface: time per forward (and optionally forward+backward) of one pass.

Random frozen features stand in for the pixel decoder of an image of ``--size`` pixels (levels at
strides 32/16/8, mask features at stride 4), random projected tokens for the language side. The
interface is built at the official Focal-T width by default (512 / 8 heads / 2048 / 9 layers /
100 proposals). Prints one line per task set, e.g.::

    python tools/benchmark_interface.py --tasks seg fused --size 640 --iters 5
    python tools/benchmark_interface.py --device cuda --dtype bfloat16 --train --batch 6

Figures are wall-clock medians over ``--iters`` runs after ``--warmup`` runs.
"""

import argparse
import statistics
import sys
import time

import torch

from find_plugin.core.conventions import NO_ITEM
from find_plugin.core.interface import FINDInterface

TASK_SETS = ("seg", "class", "grounding", "spatial", "retrieval", "interleave", "fused")


def make_tasks(name, *, batch, dim, image_hw, gen):
    """Inputs for one task (or every task with ``fused``), in FINDInterface's conventions."""

    def tokens(n):
        return torch.randn(batch, n, dim, generator=gen)

    def prompts(n):
        masks = torch.zeros(n, *image_hw, dtype=torch.bool)
        for k in range(n):
            y, x = 16 + 24 * k, 16 + 32 * k
            masks[k, y : y + 12, x : x + 12] = True
        return [masks.clone() for _ in range(batch)]

    no_pad = lambda n: torch.zeros(batch, n, dtype=torch.bool)  # noqa: E731
    all_tasks = {
        "class": {"tokens": tokens(12), "token_padding": no_pad(12)},
        "grounding": {
            "tokens": tokens(24),
            "token_padding": no_pad(24),
            "token_index": torch.arange(24).div(6, rounding_mode="floor").expand(batch, 24),
        },
        "spatial": {
            "pos_masks": prompts(3),
            "neg_masks": [torch.zeros(3, *image_hw, dtype=torch.bool) for _ in range(batch)],
        },
        "retrieval": {"tokens": tokens(20), "token_padding": no_pad(20)},
        "interleave": {
            "tokens": tokens(20),
            "token_padding": no_pad(20),
            "token_entity": torch.tensor([NO_ITEM, 0, 0, NO_ITEM, 1, 1] + [NO_ITEM] * 14).expand(
                batch, 20
            ),
            "entity_is_visual": torch.tensor([[True, False]] * batch),
            "pos_masks": [torch.cat([p[:1], torch.zeros_like(p[:1])]) for p in prompts(1)],
            "neg_masks": [torch.zeros(2, *image_hw, dtype=torch.bool) for _ in range(batch)],
        },
    }
    if name == "seg":
        return {}
    if name == "fused":
        return all_tasks
    return {name: all_tasks[name]}


def to_device(obj, device, dtype):
    if torch.is_tensor(obj):
        return obj.to(device, dtype) if obj.is_floating_point() else obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device, dtype) for v in obj]
    return obj


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["seg", "fused"], choices=TASK_SETS)
    p.add_argument("--size", type=int, default=640, help="image side in pixels (multiple of 32)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument(
        "--in-channels",
        type=int,
        default=None,
        help="pixel-decoder channels (default: --hidden, no input projection)",
    )
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--train", action="store_true", help="time forward + backward in train mode")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args(argv)
    if args.size % 32:
        p.error(f"--size must be a multiple of 32, got {args.size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    model = FINDInterface(
        hidden_dim=args.hidden,
        num_heads=8,
        dim_feedforward=4 * args.hidden,
        num_layers=args.layers,
        num_queries=args.queries,
        mask_dim=args.hidden,
        dim_proj=args.hidden,
        dim_text=args.hidden,
        in_channels=args.in_channels,
    ).to(device, dtype)
    model.train(args.train)
    gen = torch.Generator().manual_seed(0)
    s = args.size
    feats = [
        torch.randn(args.batch, model.in_channels, s // st, s // st, generator=gen)
        for st in (32, 16, 8)
    ]
    mask_features = torch.randn(args.batch, args.hidden, s // 4, s // 4, generator=gen)
    feats, mask_features = to_device((feats, mask_features), device, dtype)
    bank = torch.randn(134, args.hidden, generator=gen).to(device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"FIND interface: {n_params / 1e6:.1f} M params | image {s}x{s} | batch {args.batch} | "
        f"{device} {args.dtype} | {'forward+backward' if args.train else 'forward'} | "
        f"{torch.get_num_threads()} CPU threads"
    )
    for name in args.tasks:
        tasks = to_device(
            make_tasks(name, batch=args.batch, dim=args.hidden, image_hw=(s, s), gen=gen),
            device,
            dtype,
        )
        times = []
        for i in range(args.warmup + args.iters):
            sync(device)
            t0 = time.perf_counter()
            with torch.set_grad_enabled(args.train):
                out = model(list(feats), mask_features, tasks, class_bank=bank)
                if args.train:
                    loss = sum(v.float().mean() for k, v in out.items() if k.startswith("pred_"))
                    loss.backward()
                    model.zero_grad(set_to_none=True)
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        print(
            f"  {name:<11s} median {1e3 * statistics.median(times):8.1f} ms  "
            f"min {1e3 * min(times):8.1f} ms  ({args.iters} iters)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
