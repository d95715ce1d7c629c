"""Deterministic per-epoch sample order, split into global batches, sharded, resumable.

The epoch's order is a permutation fixed by (seed, epoch). Step ``k`` uses the global batch
``order[k*G:(k+1)*G]``; within it, micro-batch ``a`` of rank ``r`` is the slice
``(a*W + r)*b : (a*W + r + 1)*b`` (``G = W * A * b``). So the samples of a step do not depend on
the number of processes, and a run resumed at step ``k`` (on any number of processes) neither
repeats nor skips a sample. The tail ``n % G`` of an epoch is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from biofm.core.errors import ConfigError


class EpochSampler(Sampler[int]):
    """This rank's sample indices for one epoch, from ``start_step`` on (see module doc)."""

    def __init__(self, n: int, global_batch: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, accum_steps: int = 1) -> None:
        parts = world_size * accum_steps
        if global_batch < 1 or global_batch % parts:
            raise ConfigError(
                f"data.batch_size={global_batch} does not split into {world_size} processes x "
                f"{accum_steps} accumulation steps",
                f"use a data.batch_size that is a multiple of {parts}",
            )
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.global_batch = global_batch
        self.micro_batch = global_batch // parts
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def order(self) -> list[int]:
        """The epoch's global order (all ranks)."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def step_indices(self, order: list[int], step: int) -> list[list[int]]:
        """This rank's micro-batches of ``step``: ``accum_steps`` lists of indices."""
        base, b = step * self.global_batch, self.micro_batch
        starts = (base + (a * self.world_size + self.rank) * b for a in range(self.accum_steps))
        return [order[s:s + b] for s in starts]

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        for step in range(self.start_step, self.steps_per_epoch):
            for micro in self.step_indices(order, step):
                yield from micro

    def __len__(self) -> int:
        steps = max(0, self.steps_per_epoch - self.start_step)
        return steps * self.accum_steps * self.micro_batch
