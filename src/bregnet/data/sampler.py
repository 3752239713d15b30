"""Class-balanced sampling: the alternative to a class-weighted loss for imbalanced data sets."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ClassBalancedSampler"]


class ClassBalancedSampler(Sampler[int]):
    """Draws a class uniformly (among the classes present), then an item of it uniformly.

    Items labelled ``-1`` (no class) are never drawn. Sampling is with replacement, so rare classes
    repeat and frequent ones are under-sampled; an epoch has ``num_samples`` draws (default: the
    number of labelled items).

    Sharding works like :class:`torch.utils.data.DistributedSampler`: every rank draws the same
    global sequence (seeded by ``seed + epoch``; call :meth:`set_epoch` every epoch), padded to a
    multiple of ``world_size``, and keeps every ``world_size``-th index from ``rank``. If an
    explicit ``generator`` is given it is used instead (its state advances each epoch; with
    several ranks every rank must pass an identically seeded generator).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor, num_samples: int | None = None,
                 generator: torch.Generator | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64).flatten()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"ClassBalancedSampler: need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        valid = (lab >= 0).nonzero().flatten()
        if len(valid) == 0:
            raise ValueError("ClassBalancedSampler: no labelled items (all labels are -1)")
        order = torch.argsort(lab[valid], stable=True)
        self._sorted = valid[order]
        self.classes, counts = torch.unique_consecutive(lab[self._sorted], return_counts=True)
        self._counts = counts
        self._starts = torch.cumsum(counts, 0) - counts
        total = int(num_samples) if num_samples is not None else len(valid)
        if total < 1:
            raise ValueError("ClassBalancedSampler: num_samples must be positive")
        self.total_size = math.ceil(total / world_size) * world_size
        self.num_samples = self.total_size // world_size
        self.generator = generator
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _global_indices(self) -> torch.Tensor:
        g = self.generator
        if g is None:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
        n = self.total_size
        cls = torch.randint(0, len(self.classes), (n,), generator=g, device=g.device).cpu()
        r = torch.rand(n, generator=g, device=g.device, dtype=torch.float64).cpu()
        counts = self._counts[cls]
        offset = torch.minimum((r * counts).long(), counts - 1)
        return self._sorted[self._starts[cls] + offset]

    def __iter__(self) -> Iterator[int]:
        idx = self._global_indices()[self.rank:self.total_size:self.world_size]
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples
