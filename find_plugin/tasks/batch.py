"""One training or evaluation batch across several tasks (what both adapters call).

:func:`prepare_batch` draws every task's sample for every record, packs the interface inputs
(merged over tasks: one prototype is fed by one task only) and merges the per-image criterion
targets. :func:`criterion_loss_groups` lists the loss groups of a task set, for building the
:class:`~find_plugin.core.criterion.FINDCriterion`. Tasks whose losses the criterion does not know
add them through :meth:`~.base.FINDTask.losses` (see :func:`task_losses`).
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

from .base import FINDTask, ProjectFn, TextEncoderFn, merge_task_inputs

__all__ = ["TaskBatch", "prepare_batch", "criterion_loss_groups", "task_losses"]


@dataclass
class TaskBatch:
    """``samples[task][b]``, interface ``inputs`` ({prototype: inputs}), per-image ``targets``."""

    samples: Dict[str, List[dict]]
    inputs: Dict[str, dict]
    targets: List[dict]


def prepare_batch(
    tasks: Sequence[FINDTask],
    records: Sequence[Mapping],
    *,
    generator: torch.Generator,
    encode_text: TextEncoderFn,
    project: ProjectFn,
    padded_size: Tuple[int, int],
    training: bool,
) -> TaskBatch:
    """Sample, pack and build targets of ``tasks`` for ``records`` (one per image, in order)."""
    if not records:
        raise ValueError("prepare_batch: no records")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"prepare_batch: a task is listed twice in {names}")
    samples = {
        t.name: [
            t.sample(r, generator=generator, encode_text=encode_text, training=training)
            for r in records
        ]
        for t in tasks
    }
    packed = [
        (t.name, t.pack_inputs(samples[t.name], project=project, padded_size=padded_size))
        for t in tasks
    ]
    inputs = merge_task_inputs(packed)
    targets: List[dict] = [{} for _ in records]
    if training:
        for t in tasks:
            parts = t.build_targets(samples[t.name], project=project, padded_size=padded_size)
            for b, part in enumerate(parts):
                clash = set(part) & set(targets[b])
                if clash:
                    raise ValueError(f"task {t.name!r} sets target keys {sorted(clash)} again")
                targets[b].update(part)
    return TaskBatch(samples=samples, inputs=inputs, targets=targets)


def criterion_loss_groups(tasks: Sequence[FINDTask]) -> Tuple[str, ...]:
    """Union of the tasks' criterion loss groups, in task order."""
    groups: List[str] = []
    for t in tasks:
        groups += [g for g in t.loss_groups if g not in groups]
    return tuple(groups)


def task_losses(tasks: Sequence[FINDTask], outputs: Mapping, batch: TaskBatch, **kwargs) -> Dict:
    """Losses that tasks compute themselves (outside the criterion's groups), merged."""
    out: Dict[str, torch.Tensor] = {}
    for t in tasks:
        for k, v in t.losses(outputs, batch.samples[t.name], **kwargs).items():
            if k in out:
                raise ValueError(f"loss {k!r} is produced by two tasks")
            out[k] = v
    return out
