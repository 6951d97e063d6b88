"""One training or evaluation batch across several tasks (what both adapters call).

:func:`sample_record` draws every task's sample of one record (a data mapper's job, in the
loader workers: prompt simulation and cached text features); :func:`collate_samples` packs a
batch of them into the interface inputs (merged over tasks: one prototype is fed by one task only)
and the per-image criterion targets (the model's job: it owns the trainable ``lang_proj``).
:func:`prepare_batch` does both. :func:`criterion_loss_groups` lists the loss groups of a task
set, for building the :class:`~find_plugin.core.criterion.FINDCriterion`. Tasks whose losses the
criterion does not know add them through :meth:`~.base.FINDTask.losses` (see :func:`task_losses`).
"""

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .base import FINDTask, ProjectFn, TextEncoderFn, merge_task_inputs

__all__ = [
    "TaskBatch",
    "sample_record",
    "collate_samples",
    "prepare_batch",
    "criterion_loss_groups",
    "task_losses",
    "record_generator",
]


@dataclass
class TaskBatch:
    """``samples[task][b]``, interface ``inputs`` ({prototype: inputs}), per-image ``targets``."""

    samples: Dict[str, List[dict]]
    inputs: Dict[str, dict]
    targets: List[dict]


def record_generator(seed: int, image_id, count: Optional[int] = None) -> torch.Generator:
    """A generator seeded from ``(seed, image_id[, count])`` by hashing (no global RNG, no wall
    clock): the same image in the same call gets the same draws in every process. What the data
    mappers / pipelines of both adapters pass to :func:`sample_record`."""
    key = f"{int(seed)}/{image_id}" + ("" if count is None else f"/{int(count)}")
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1
    return torch.Generator().manual_seed(value)


def sample_record(
    tasks: Sequence[FINDTask],
    record: Mapping,
    *,
    generator: torch.Generator,
    encode_text: TextEncoderFn,
    training: bool,
) -> Dict[str, dict]:
    """Every task's sample of one record (what a data mapper does per image)."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"a task is listed twice in {names}")
    return {
        t.name: t.sample(record, generator=generator, encode_text=encode_text, training=training)
        for t in tasks
    }


def collate_samples(
    tasks: Sequence[FINDTask],
    per_image: Sequence[Mapping[str, dict]],
    *,
    project: ProjectFn,
    padded_size: Tuple[int, int],
    training: bool,
) -> TaskBatch:
    """Per-image samples (:func:`sample_record`) -> interface inputs (merged over tasks) and, in
    training, per-image criterion targets (what a model does with a batch)."""
    if not per_image:
        raise ValueError("collate_samples: empty batch")
    samples = {}
    for t in tasks:
        missing = [b for b, s in enumerate(per_image) if t.name not in s]
        if missing:
            raise KeyError(f"images {missing} of the batch have no sample of task {t.name!r}")
        samples[t.name] = [s[t.name] for s in per_image]
    packed = [
        (t.name, t.pack_inputs(samples[t.name], project=project, padded_size=padded_size))
        for t in tasks
    ]
    inputs = merge_task_inputs(packed)
    targets: List[dict] = [{} for _ in per_image]
    if training:
        for t in tasks:
            parts = t.build_targets(samples[t.name], project=project, padded_size=padded_size)
            for b, part in enumerate(parts):
                clash = set(part) & set(targets[b])
                if clash:
                    raise ValueError(f"task {t.name!r} sets target keys {sorted(clash)} again")
                targets[b].update(part)
    return TaskBatch(samples=samples, inputs=inputs, targets=targets)


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
    """:func:`sample_record` for every record then :func:`collate_samples`."""
    if not records:
        raise ValueError("prepare_batch: no records")
    per_image = [
        sample_record(tasks, r, generator=generator, encode_text=encode_text, training=training)
        for r in records
    ]
    return collate_samples(
        tasks, per_image, project=project, padded_size=padded_size, training=training
    )


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
