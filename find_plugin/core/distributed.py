"""Cross-process gathers used inside the losses and the class-bank refresh (identity in a
single process). Every process must pass tensors of the same shape (detectron2 gives every rank
the same number of images)."""

import torch
import torch.distributed as dist

__all__ = ["all_gather_with_grad", "all_gather_no_grad", "world_size"]


def world_size() -> int:
    """Number of processes of the default group (1 when torch.distributed is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from every process in rank order; only the local rows keep
    gradients (the other processes' rows are constants here)."""
    if world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from every process in rank order (no gradient)."""
    return all_gather_with_grad(x.detach())
