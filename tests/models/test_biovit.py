"""BioViT: pad-free packing equals the padded reference, batching invariance, bad input."""

from __future__ import annotations

import pytest
import torch

import biofm
from biofm.core import DEFAULT_VOCAB, BadInputError, PackedBatch
from biofm.models.padded import padded_forward_tokens
from tests.models.batches import assert_same_alone_or_batched, random_batch


def _batch(counts: list[int], size: int = 32, seed: int = 0, names: bool = True) -> PackedBatch:
    return random_batch(counts, size, seed, names)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return biofm.create_model("biovit_tiny", depth=3).eval()


def test_every_channel_count_1_to_10_in_one_batch(model: torch.nn.Module) -> None:
    counts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 1]
    batch = _batch(counts)
    with torch.no_grad():
        out = model.forward_tokens(batch)
    assert out.cls.shape == (len(counts), model.embed_dim)
    assert out.patches.shape == (sum(counts), 4, model.embed_dim)
    assert torch.isfinite(out.cls).all()


@pytest.mark.parametrize(("identity", "pool"), [("vocab", "cls"), ("position", "cls"),
                                               ("none", "cls"), ("vocab", "mean")])
def test_packed_equals_padded_reference(identity: str, pool: str) -> None:
    torch.manual_seed(1)
    m = biofm.create_model("biovit_tiny", depth=3, channel_identity=identity, pool=pool).eval()
    batch = _batch([1, 3, 10, 2, 5, 3], seed=3)
    with torch.no_grad():
        packed = m.forward_tokens(batch)
        ref, mask = padded_forward_tokens(m, batch, max_channels=10)
    assert mask.sum() == batch.planes.shape[0]
    torch.testing.assert_close(packed.cls, ref.cls, atol=1e-4, rtol=0)
    torch.testing.assert_close(packed.patches, ref.patches, atol=1e-4, rtol=0)


def test_embedding_same_alone_or_batched(model: torch.nn.Module) -> None:
    assert_same_alone_or_batched(model, _batch([2, 5, 5, 1, 7], seed=4))


def test_batch_order_does_not_matter(model: torch.nn.Module) -> None:
    batch = _batch([3, 1, 4], seed=5)
    ims, ids = batch.images(), [batch.channel_ids[s:e].tolist() for s, e in
                                zip(batch.offsets[:-1].tolist(), batch.offsets[1:].tolist(),
                                    strict=True)]
    rev = PackedBatch.from_images(ims[::-1], ids[::-1])
    with torch.no_grad():
        torch.testing.assert_close(model(rev).flip(0), model(batch), atol=1e-5, rtol=0)


def test_backward_reaches_every_parameter() -> None:
    m = biofm.create_model("biovit_tiny", depth=2)
    batch = _batch([1, 4, 2], seed=6)
    m(batch).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


def test_without_names_uses_unknown(model: torch.nn.Module) -> None:
    batch = _batch([2, 3], names=False)
    assert batch.channel_ids.eq(0).all()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_intermediates_last_block_is_the_embedding(model: torch.nn.Module) -> None:
    batch = _batch([1, 3, 3])
    with torch.no_grad():
        inter = model.forward_intermediates(batch, blocks=[0, -1])
        emb = model(batch)
    assert sorted(inter) == [0, 2]
    torch.testing.assert_close(inter[2], emb)
    assert not torch.allclose(inter[0], emb)


def test_bad_inputs_name_the_fix(model: torch.nn.Module) -> None:
    with pytest.raises(BadInputError, match="float"):
        model(PackedBatch(torch.zeros(2, 32, 32, dtype=torch.int32),
                          torch.zeros(2, dtype=torch.long), torch.tensor([2])))
    with pytest.raises(BadInputError, match=r"smaller than BioViT's minimum of 16x16"):
        model(_batch([2], size=8))
    with pytest.raises(BadInputError, match="not a multiple of 16"):
        model(_batch([2], size=40))
    with pytest.raises(BadInputError, match="0 channels"):
        PackedBatch(torch.zeros(0, 32, 32), torch.zeros(0, dtype=torch.long), torch.tensor([0]))
    bad_ids = _batch([2])
    bad_ids.channel_ids[:] = 10_000
    with pytest.raises(BadInputError, match="vocabulary"):
        model(bad_ids)


def test_unknown_model_name_suggests() -> None:
    with pytest.raises(BadInputError, match="biovit_tiny"):
        biofm.create_model("biovit_tiny_typo")


@pytest.mark.parametrize("name", ["biovit_tiny", "boc_vit_tiny", "bioresnet18"])
def test_unseen_channel_names_map_to_unknown_and_embed(name: str) -> None:
    torch.manual_seed(0)
    kw = {"depth": 2} if "vit" in name else {}
    m = biofm.create_model(name, **kw).eval()
    names = ["Hoechst 33342", "my-new-probe-X17", "Alexa 568 phalloidin"]
    ids = DEFAULT_VOCAB.ids(names)
    assert ids[1] == DEFAULT_VOCAB.id("unknown") == 0 and ids[0] != 0
    im = torch.randn(3, 32, 32)
    with torch.no_grad():
        named = m(PackedBatch.from_images([im], [ids]))
        unnamed = m(PackedBatch.from_images([im]))  # no names at all: every channel unknown
    assert torch.isfinite(named).all() and torch.isfinite(unnamed).all()
    assert not torch.allclose(named, unnamed, atol=1e-6)  # the known names are used


def test_more_channels_than_position_slots_names_the_fix() -> None:
    m = biofm.create_model("biovit_tiny", depth=1, channel_identity="position",
                           max_channels=4).eval()
    assert m.card()["input"]["max_channels"] == 4 and not m.channel_order_invariant
    with torch.no_grad():
        assert m(_batch([4, 2])).shape == (2, m.embed_dim)
        with pytest.raises(BadInputError, match="at most 4") as err:
            m(_batch([5]))
    assert "select at most that many channels" in str(err.value)
