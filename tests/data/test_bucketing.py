"""Batches bucketed by channel count: every index once, few counts per batch, deterministic."""

from __future__ import annotations

import pytest
import torch

from biofm.core import BadInputError
from biofm.data.bucketing import bucket_by_channels, order_by_channels


def _counts(n: int = 320, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 11, (n,), generator=g).tolist()


def test_every_index_once_and_deterministic() -> None:
    counts = _counts()
    batches = bucket_by_channels(counts, 16, pool_batches=4, seed=3)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(counts)))
    assert batches == bucket_by_channels(counts, 16, pool_batches=4, seed=3)
    assert batches != bucket_by_channels(counts, 16, pool_batches=4, seed=4)


def test_bucketing_reduces_distinct_counts_per_batch() -> None:
    counts = _counts()

    def mean_distinct(pool: int) -> float:
        batches = bucket_by_channels(counts, 16, pool_batches=pool, seed=0)
        return sum(len({counts[i] for i in b}) for b in batches) / len(batches)

    assert mean_distinct(1) > 6  # random mix of 1..10
    assert mean_distinct(16) < 2.5


def test_drop_last_and_bad_sizes() -> None:
    batches = bucket_by_channels(_counts(50), 16, pool_batches=2, drop_last=True)
    assert all(len(b) == 16 for b in batches)
    with pytest.raises(BadInputError, match="at least 1"):
        bucket_by_channels([1, 2], 0)


def test_order_by_channels_is_stable() -> None:
    assert order_by_channels([3, 1, 3, 2, 1]) == [1, 4, 3, 0, 2]
