"""Epoch-keyed sampling: what a training step sees depends only on (seed, epoch, position), never on process state.

That makes a run resumed from a checkpoint draw exactly the pairs the uninterrupted run would have drawn, whatever
the number of DataLoader workers, and it gives each DDP rank its own disjoint share without Lightning's sampler
wrapper. The sampler yields *sample keys* ``epoch * len(dataset) + index``; a dataset maps a key to its item with
``key % len`` and seeds the item's random draws (frames, augmentation) from ``(seed, key)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if num_items < 1:
            raise ValueError(f"EpochSampler needs at least one item, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._rank = rank
        self._world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def _topology(self) -> tuple[int, int]:
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _per_rank(self, world_size: int) -> int:
        if self.drop_last:
            return self.num_items // world_size
        return math.ceil(self.num_items / world_size)

    def __len__(self) -> int:
        return self._per_rank(self._topology()[1])

    def __iter__(self) -> Iterator[int]:
        rank, world_size = self._topology()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        per_rank = self._per_rank(world_size)
        total = per_rank * world_size
        order = (order * math.ceil(total / len(order)))[:total]  # pad by wrapping (or truncate) to split evenly
        base = self.epoch * self.num_items
        return iter(base + index for index in order[rank:total:world_size])


def item_random(seed: int, key: int) -> tuple[np.random.Generator, torch.Generator]:
    """(numpy RNG, torch RNG) for a sample key; both depend only on (seed, key)."""
    rng = np.random.default_rng([seed, key])
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, generator
