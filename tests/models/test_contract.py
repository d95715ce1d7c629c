"""The Encoder contract, run on every registered model at its real architecture.

Mixed batches with C in {1, 2, 3, 5, 8, 10} in one batch, with and without channel names,
forward and backward on CPU; dense and per-block outputs; the card; a save/load round trip;
channel-order invariance where the model claims it; and errors that name the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import biofm
from biofm.core import DEFAULT_VOCAB, BadInputError, PackedBatch
from biofm.models import Encoder
from biofm.models.io import load_encoder, save_encoder

COUNTS = [1, 2, 3, 5, 8, 10]
SIZE = 32
MODELS = biofm.list_models()


def _batch(names: bool, seed: int = 0, counts: list[int] = COUNTS) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    ims = [torch.randn(c, SIZE, SIZE, generator=g) for c in counts]
    ids = None
    if names:
        ids = [torch.randint(1, len(DEFAULT_VOCAB), (c,), generator=g).tolist() for c in counts]
    return PackedBatch.from_images(ims, ids)


_CACHE: dict[str, Encoder] = {}


def _model(name: str) -> Encoder:
    if name not in _CACHE:
        torch.manual_seed(0)
        m = biofm.create_model(name)
        assert isinstance(m, Encoder), f"{name} does not implement the Encoder contract"
        _CACHE[name] = m
    return _CACHE[name]


def test_registry_has_the_required_families() -> None:
    for name in ("biovit_tiny", "biovit_small", "biovit_base", "biovit_tiny_p8",
                 "biovit_small_p8", "biovit_base_p8", "boc_vit_small", "bioresnet18",
                 "bioresnet50"):
        assert name in MODELS, f"{name} is not registered"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("names", [True, False], ids=["named", "unnamed"])
def test_forward_backward_on_mixed_channel_counts(name: str, names: bool) -> None:
    model = _model(name).train()
    batch = _batch(names)
    out = model(batch)
    assert out.shape == (len(COUNTS), model.embed_dim)
    assert torch.isfinite(out).all()
    model.zero_grad(set_to_none=True)
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", MODELS)
def test_dense_and_per_block_outputs(name: str) -> None:
    model = _model(name).eval()
    batch = _batch(True, seed=1)
    with torch.no_grad():
        tok = model.forward_tokens(batch)
        pooled = model(batch)
        inter = model.forward_intermediates(batch, [0, -1])
    torch.testing.assert_close(tok.cls, pooled, atol=1e-5, rtol=0)
    rows = batch.planes.shape[0] if tok.per_plane else batch.num_images
    assert tok.patches.shape[0] == rows
    assert tok.patches.shape[1] == tok.grid[0] * tok.grid[1] >= 1
    assert set(inter) == {0, model.num_blocks - 1}
    assert all(v.shape[0] == batch.num_images and torch.isfinite(v).all() for v in inter.values())
    with pytest.raises(BadInputError, match="blocks"):
        model.forward_intermediates(batch, [model.num_blocks])


@pytest.mark.parametrize("name", MODELS)
def test_channel_order_invariance_with_names(name: str) -> None:
    model = _model(name).eval()
    if not model.channel_order_invariant:
        pytest.skip(f"{name} encodes channel slot positions by design")
    g = torch.Generator().manual_seed(2)
    im = torch.randn(5, SIZE, SIZE, generator=g)
    ids = [3, 1, 4, 9, 2]
    perm = [4, 2, 0, 3, 1]
    with torch.no_grad():
        a = model(PackedBatch.from_images([im], [ids]))
        b = model(PackedBatch.from_images([im[perm]], [[ids[i] for i in perm]]))
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_card_and_round_trip(name: str, tmp_path: Path) -> None:
    model = _model(name).eval()
    card = model.card()
    assert card["model_name"] == name and card["embed_dim"] == model.embed_dim
    assert card["num_blocks"] == model.num_blocks and card["num_params"] > 0
    json.dumps(card)
    save_encoder(model, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    batch = _batch(True, seed=3, counts=[2, 5])
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_names_the_fix(name: str) -> None:
    model = _model(name).eval()
    ints = PackedBatch(torch.zeros(2, SIZE, SIZE, dtype=torch.int32),
                       torch.zeros(2, dtype=torch.long), torch.tensor([2]))
    with pytest.raises(BadInputError, match="float"):
        model(ints)
    with pytest.raises(BadInputError, match="0 channels"):
        model(PackedBatch(torch.zeros(2, SIZE, SIZE), torch.zeros(2, dtype=torch.long),
                          torch.tensor([2, 0])))
    tiny = max(1, model.min_size // 2)
    with pytest.raises(BadInputError, match="smaller than"):
        model(PackedBatch.from_images([torch.randn(2, tiny, tiny)]))
    if model.uses_channel_ids:
        bad = PackedBatch.from_images([torch.randn(2, SIZE, SIZE)], [[1, 10_000]])
        with pytest.raises(BadInputError, match="vocabulary"):
            model(bad)


def test_packing_an_image_with_zero_channels_is_refused() -> None:
    with pytest.raises(BadInputError, match="0 channels"):
        PackedBatch.from_images([torch.randn(2, 8, 8), torch.randn(0, 8, 8)])
