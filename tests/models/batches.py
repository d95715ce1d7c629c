"""Random packed batches for model tests."""

from __future__ import annotations

import torch

from biofm.core import DEFAULT_VOCAB, PackedBatch


def random_batch(counts: list[int], size: int = 32, seed: int = 0, names: bool = True,
                 low_id: int = 0) -> PackedBatch:
    """Images of ``counts`` channels, ``size`` px, random pixels; random stain ids in
    ``low_id``..len(vocab)-1 when ``names``, else every channel ``unknown``."""
    g = torch.Generator().manual_seed(seed)
    ims = [torch.randn(c, size, size, generator=g) for c in counts]
    ids = None
    if names:
        ids = [torch.randint(low_id, len(DEFAULT_VOCAB), (c,), generator=g).tolist()
               for c in counts]
    return PackedBatch.from_images(ims, ids)
