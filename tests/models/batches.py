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


def assert_same_alone_or_batched(model: torch.nn.Module, batch: PackedBatch) -> None:
    """Each image embeds the same alone as inside ``batch`` (images never interact)."""
    with torch.no_grad():
        together = model(batch)
        for i, im in enumerate(batch.images()):
            start, end = batch.offsets[i].item(), batch.offsets[i + 1].item()
            ids = [batch.channel_ids[start:end].tolist()]
            alone = model(PackedBatch.from_images([im], ids))
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)
