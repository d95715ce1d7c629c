"""Batches bucketed by channel count.

A packed BioViT batch runs one attention call per distinct channel count, so batches whose
images share few channel counts take fewer (and larger) operator calls per step. The helpers
here only choose which dataset indices go together; packing stays pad-free either way.

* :func:`bucket_by_channels` for training: shuffle, cut the indices into pools of
  ``pool_batches`` batches, sort each pool by channel count (stable), cut it into batches and
  shuffle the batch order. Every index appears exactly once per epoch, deterministically per
  ``seed``; a larger pool gives batches with fewer distinct counts.
* :func:`order_by_channels` for embedding: one order of the whole dataset by channel count, to
  batch in that order and write each embedding back at its index.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from biofm.core.errors import BadInputError


def order_by_channels(counts: Sequence[int]) -> list[int]:
    """Indices sorted by channel count, ties in index order."""
    return sorted(range(len(counts)), key=lambda i: int(counts[i]))


def bucket_by_channels(counts: Sequence[int], batch_size: int, pool_batches: int = 16,
                       seed: int = 0, drop_last: bool = False) -> list[list[int]]:
    """Batches of dataset indices (lists of ``batch_size``) with few channel counts each.

    ``counts``: channel count of every item; ``pool_batches``: batches per sorting pool
    (1 keeps the random mix, ``len(counts)`` sorts globally). The last batch of a pool may be
    short; ``drop_last`` drops the epoch's short batches.
    """
    if batch_size < 1 or pool_batches < 1:
        raise BadInputError(f"batch_size={batch_size}, pool_batches={pool_batches}",
                            "use a batch size and pool size of at least 1")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(counts), generator=g).tolist()
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(perm), pool):
        chunk = sorted(perm[start:start + pool], key=lambda i: int(counts[i]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]
