"""Explicit randomness: every random choice in ``biofm.data`` draws from a ``torch.Generator``.

A generator is derived from integer keys (seed, epoch, index, ...) so that a given key gives the
same crop and the same views in any process, worker count or order of access.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def generator_for(*keys: int) -> torch.Generator:
    """A CPU generator seeded from the integer keys, well mixed (SeedSequence)."""
    words = [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    seed = (int(state[0]) << 31) ^ int(state[1])
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    """One float uniform in [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def uniform_vec(gen: torch.Generator, lo: float, hi: float, n: int) -> torch.Tensor:
    """(n,) floats uniform in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def log_uniform_vec(gen: torch.Generator, lo: float, hi: float, n: int) -> torch.Tensor:
    """(n,) floats whose log is uniform in [log lo, log hi) (lo, hi > 0)."""
    return torch.exp(uniform_vec(gen, math.log(lo), math.log(hi), n))


def coin(gen: torch.Generator, p: float) -> bool:
    """True with probability p."""
    return p > 0 and float(torch.rand((), generator=gen)) < p


def randint(gen: torch.Generator, high: int) -> int:
    """One int uniform in [0, high)."""
    return int(torch.randint(high, (), generator=gen))
