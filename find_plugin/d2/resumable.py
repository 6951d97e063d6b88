"""A training stream that a resumed run continues exactly where the killed run stopped.

detectron2's ``TrainingSampler`` restarts its index stream from the beginning after ``--resume``,
and a mapper's private call counter restarts from 0, so a resumed run sees other images and other
augmentations than an uninterrupted one. Here:

* :class:`ResumableTrainingSampler` yields ``(index, position)`` pairs of the same seeded infinite
  shuffled stream, starting at ``start`` (the number of items already consumed by this rank:
  ``iteration x images per rank``);
* :class:`PositionedDataset` answers ``dataset[(index, position)]`` with the mapped dataset dict:
  the mapper sees ``find_stream_position``, which the FIND training mappers use (instead of a call
  counter) to seed their generator, so the draws of an item depend only on (seed, image id,
  stream position).

Together with the model's training state (class bank, generator; see
:meth:`find_plugin.d2.FIND.training_state`) stored as a checkpointable, a resumed run reproduces
the uninterrupted run's batches and random choices.
"""

import itertools
from typing import Callable, Iterator, Sequence, Tuple

import torch
from detectron2.utils import comm
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableTrainingSampler", "PositionedDataset", "STREAM_POSITION_KEY"]

STREAM_POSITION_KEY = "find_stream_position"


class ResumableTrainingSampler(Sampler):
    """Infinite seeded shuffle of ``range(size)`` (one permutation per epoch), sharded over ranks
    like detectron2's ``TrainingSampler`` (rank r takes every world-size-th item); yields
    ``(index, position)`` from this rank's ``start``-th item on, ``position`` being the item's
    place in the global stream (so one process and several processes with the same total batch
    draw the same augmentations for the same items)."""

    def __init__(self, size: int, *, seed: int, start: int = 0, shuffle: bool = True):
        if size <= 0:
            raise ValueError(f"ResumableTrainingSampler: the dataset is empty (size={size})")
        self.size, self.seed, self.start, self.shuffle = int(size), int(seed), int(start), shuffle
        self.rank, self.world = comm.get_rank(), comm.get_world_size()

    def _global_stream(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            order = (
                torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            )
            yield from order.tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        mine = itertools.islice(self._global_stream(), self.rank, None, self.world)
        for local, index in enumerate(itertools.islice(mine, self.start, None), self.start):
            yield index, local * self.world + self.rank


class PositionedDataset(Dataset):
    """``dataset[(index, position)]`` -> ``mapper(dicts[index] + its stream position)``."""

    def __init__(self, dicts: Sequence[dict], mapper: Callable[[dict], dict]):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key):
        index, position = key if isinstance(key, tuple) else (key, None)
        item = dict(self.dicts[index])
        if position is not None:
            item[STREAM_POSITION_KEY] = int(position)
        return self.mapper(item)
