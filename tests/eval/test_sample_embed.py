"""Embedding in-memory samples: mixed channel counts in one batch, batch-independent, sized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import biofm
from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.eval.sample_embed import embed_samples


def test_mixed_channels_batch_independent_and_resized() -> None:
    torch.manual_seed(0)
    model = biofm.create_model("biovit_tiny", depth=1, embed_dim=32, num_heads=2, patch_size=8)
    rng = np.random.default_rng(0)
    samples = [Sample(rng.integers(0, 4000, (c, 40, 40)).astype(np.uint16), names)
               for c, names in ((1, ["DNA"]), (3, ["DNA", "AGP", "RNA"]),
                                (5, ["DNA", "ER", "RNA", "AGP", "Mito"]))]  # fmt: skip
    together = embed_samples(model, samples, input_size=32, batch_size=3)
    alone = np.concatenate([embed_samples(model, [s], input_size=32) for s in samples])
    assert together.shape == (3, 32) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # the input size matters (resized before the model), and channel names are used
    assert not np.allclose(embed_samples(model, samples[:1], input_size=24), together[:1])
    renamed = Sample(samples[1].pixels, ["Mito", "ER", "DNA"])
    assert not np.allclose(embed_samples(model, [renamed], input_size=32), together[1:2])
    with pytest.raises(BadInputError, match="no samples"):
        embed_samples(model, [], input_size=32)
