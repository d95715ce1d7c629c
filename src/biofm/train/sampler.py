"""Deterministic per-epoch sample order with a resume offset (rank-sharded when distributed)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` fixed by (seed, epoch), sharded by rank, resumable.

    ``start`` skips the first ``start`` indices of this rank's share of the epoch (the samples a
    killed run already consumed), so a resumed epoch neither repeats nor skips samples.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self._order()) - self.start)
