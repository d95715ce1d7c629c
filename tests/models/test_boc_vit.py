"""Bag-of-channels ViT: channel independence in the trunk, order-invariant fusion against naive
references, batching invariance, intermediates and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

import biofm.models.boc_vit  # noqa: F401  (registers the boc_vit variants)
from biofm.core import DEFAULT_VOCAB, BadInputError, PackedBatch
from biofm.models.boc_vit import BoCViT, segment_softmax
from biofm.models.registry import create_model
from tests.models.batches import assert_same_alone_or_batched, random_batch

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2}


def _batch(counts: list[int], size: int = 32, seed: int = 0, names: bool = True) -> PackedBatch:
    return random_batch(counts, size, seed, names, low_id=1)


def _model(**kw: object) -> BoCViT:
    torch.manual_seed(0)
    m = create_model("boc_vit_tiny", **{**TINY, **kw})
    assert isinstance(m, BoCViT)
    return m.eval()


def _ids(batch: PackedBatch, i: int) -> list[int]:
    start, end = batch.offsets[i].item(), batch.offsets[i + 1].item()
    return batch.channel_ids[start:end].tolist()


@pytest.fixture(scope="module")
def model() -> BoCViT:
    return _model()


def test_mixed_counts_forward_and_backward() -> None:
    counts = [1, 2, 3, 5, 8, 10]
    m = _model().train()
    batch = _batch(counts, seed=1)
    out = m.forward_tokens(batch)
    assert out.cls.shape == (len(counts), 64)
    assert out.patches.shape == (sum(counts), 4, 64)
    assert out.grid == (2, 2) and out.per_plane
    assert torch.isfinite(out.cls).all() and torch.isfinite(out.patches).all()
    (out.cls.square().sum() + out.patches.mean()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []
    assert m.fusion is not None
    for p in (m.patch_embed.proj.weight, m.blocks[0].attn.qkv.weight, m.blocks[-1].mlp.fc2.weight,
              m.fusion.query, m.fusion.key.weight, m.fusion.value.weight, m.fusion.proj.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_same_alone_or_batched(model: BoCViT) -> None:
    assert_same_alone_or_batched(model, _batch([2, 5, 1, 3], seed=2))


@pytest.mark.parametrize("fusion", ["attention", "mean"])
def test_permuting_channels_with_ids_keeps_embedding(fusion: str) -> None:
    m = _model(fusion=fusion)
    batch = _batch([5], seed=3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    shuffled = PackedBatch(batch.planes[perm], batch.channel_ids[perm], batch.counts)
    with torch.no_grad():
        torch.testing.assert_close(m(shuffled), m(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fusion", ["attention", "mean"])
def test_identity_none_ignores_ids_and_order(fusion: str) -> None:
    m = _model(channel_identity="none", fusion=fusion)
    assert not m.uses_channel_ids and m.channel_embed is None
    batch = _batch([4, 2], seed=4)
    perm = torch.tensor([2, 0, 3, 1, 5, 4])
    planes_only = PackedBatch(batch.planes[perm], batch.channel_ids, batch.counts)
    other_ids = PackedBatch(batch.planes, torch.zeros_like(batch.channel_ids), batch.counts)
    with torch.no_grad():
        ref = m(batch)
        torch.testing.assert_close(m(planes_only), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(m(other_ids), ref, atol=1e-5, rtol=0)


def test_vocab_identity_reads_ids(model: BoCViT) -> None:
    batch = _batch([3], seed=5)
    new_ids = (batch.channel_ids + 1) % len(DEFAULT_VOCAB)
    relabelled = PackedBatch(batch.planes, new_ids, batch.counts)
    with torch.no_grad():
        assert (model(relabelled) - model(batch)).abs().max() > 1e-3


def test_plane_tokens_do_not_depend_on_other_channels(model: BoCViT) -> None:
    batch = _batch([6, 2], seed=6)
    with torch.no_grad():
        full = model.forward_tokens(batch)
        for j in range(6):
            single = PackedBatch.from_images([batch.planes[j][None]], [[_ids(batch, 0)[j]]])
            alone = model.forward_tokens(single)
            torch.testing.assert_close(alone.patches[0], full.patches[j], atol=1e-5, rtol=0)
        # changing every other channel of image 0 leaves plane 0's tokens unchanged
        planes = batch.planes.clone()
        planes[1:6] = torch.randn(5, 32, 32)
        changed = model.forward_tokens(PackedBatch(planes, batch.channel_ids, batch.counts))
    torch.testing.assert_close(changed.patches[0], full.patches[0], atol=1e-5, rtol=0)
    assert (changed.patches[1] - full.patches[1]).abs().max() > 1e-3


def test_mean_fusion_equals_mean_of_separate_planes() -> None:
    m = _model(fusion="mean")
    batch = _batch([1, 4, 3], seed=7)
    with torch.no_grad():
        fused = m(batch)
        for i, im in enumerate(batch.images()):
            ids = _ids(batch, i)
            per_plane = [m(PackedBatch.from_images([im[c][None]], [[ids[c]]]))[0]
                         for c in range(im.shape[0])]
            ref = torch.stack(per_plane).mean(0)
            torch.testing.assert_close(fused[i], ref, atol=1e-5, rtol=0)


def test_attention_fusion_equals_naive_reference() -> None:
    m = _model(fusion_heads=4)
    pool = m.fusion
    assert pool is not None and pool.num_heads == 4
    with torch.no_grad():  # a sharper query than at init, so the weights are far from uniform
        pool.query.normal_(0, 1.0)
    batch = _batch([1, 2, 5, 3, 10], seed=8)
    with torch.no_grad():
        fused = m(batch)
        plane_cls, _, _, _ = m._run(batch)
        heads, dh = 4, 64 // 4
        for i in range(batch.num_images):
            start, end = batch.offsets[i].item(), batch.offsets[i + 1].item()
            x = plane_cls[start:end]  # (C, D)
            k = pool.key(x).reshape(-1, heads, dh)
            v = pool.value(x).reshape(-1, heads, dh)
            scores = torch.einsum("chd,hd->ch", k, pool.query) / math.sqrt(dh)
            w = torch.softmax(scores, dim=0)  # over this image's planes
            pooled = (w[..., None] * v).sum(0).reshape(64)
            ref = pool.norm(pool.proj(pooled))
            torch.testing.assert_close(fused[i], ref, atol=1e-5, rtol=0)
    assert not torch.allclose(fused, _model(fusion="mean")(batch), atol=1e-3)


def test_segment_softmax_is_stable_and_normalised() -> None:
    scores = torch.tensor([[1000.0, -5.0], [999.0, 3.0], [-1000.0, 0.0]])
    index = torch.tensor([0, 0, 1])
    w = segment_softmax(scores, index, 2)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[:2], torch.softmax(scores[:2], dim=0))
    torch.testing.assert_close(w[2], torch.ones(2))


def test_intermediates(model: BoCViT) -> None:
    batch = _batch([1, 3, 2], seed=9)
    assert model.num_blocks == 2
    with torch.no_grad():
        inter = model.forward_intermediates(batch, [0, -1])
    assert sorted(inter) == [0, 1]
    assert all(v.shape == (3, 64) and torch.isfinite(v).all() for v in inter.values())
    assert not torch.allclose(inter[0], inter[1])
    with pytest.raises(BadInputError, match="does not exist"):
        model.forward_intermediates(batch, [2])
    with pytest.raises(BadInputError, match="does not exist"):
        model.forward_intermediates(batch, [-3])
    mean_model = _model(fusion="mean")
    with torch.no_grad():
        last = mean_model.forward_intermediates(batch, [-1])[1]
        torch.testing.assert_close(last, mean_model(batch), atol=1e-6, rtol=0)


def test_bad_inputs_name_the_fix(model: BoCViT) -> None:
    with pytest.raises(BadInputError, match="float"):
        model(PackedBatch(torch.zeros(2, 32, 32, dtype=torch.int32),
                          torch.zeros(2, dtype=torch.long), torch.tensor([2])))
    with pytest.raises(BadInputError, match="smaller than BoCViT's minimum of 16x16"):
        model(_batch([2], size=8))
    with pytest.raises(BadInputError, match="not a multiple of 16"):
        model.forward_tokens(_batch([2], size=40))
    with pytest.raises(BadInputError, match="not a multiple of 16"):
        model.forward_intermediates(_batch([2], size=40), [0])
    bad_ids = _batch([2])
    bad_ids.channel_ids[:] = 10_000
    with pytest.raises(BadInputError, match="vocabulary"):
        model(bad_ids)
    with pytest.raises(BadInputError, match="fusion"):
        _model(fusion="max")
    with pytest.raises(BadInputError, match="channel_identity"):
        _model(channel_identity="position")


def test_variants_and_card() -> None:
    m = create_model("boc_vit_small", depth=2, embed_dim=64, num_heads=2)
    assert isinstance(m, BoCViT)
    assert m.cfg.patch_size == 16 and m.embed_dim == 64 and m.num_blocks == 2
    p8 = create_model("boc_vit_small_p8", depth=1, embed_dim=64, num_heads=2)
    assert isinstance(p8, BoCViT) and p8.min_size == p8.size_multiple == 8
    card = m.card()
    json.dumps(card)
    assert card["architecture"] == "BoCViT"
    assert card["config"]["fusion"] == "attention"
    assert card["input"]["channel_ids"] == "vocab"
