"""BioResNet: mixed channel counts, channel order/count invariance, batching invariance,
contract outputs, bad inputs, channels_last."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import biofm
import biofm.models.bioresnet  # registers the variants
from biofm.core import DEFAULT_VOCAB, BadInputError, PackedBatch
from biofm.models.bioresnet import BioResNet
from biofm.models.io import load_encoder, save_encoder
from tests.models.batches import assert_same_alone_or_batched, random_batch

# max_groups=4: with widths this small the default rule leaves 2 channels per GroupNorm group,
# and a 2-value group on the 1x1 last-stage map of a 32 px image amplifies float rounding
# (1e-3); real widths (512 / 32 groups) do not have this problem.
TINY = {"widths": (8, 16, 16, 32), "stem_width": 8, "layers": (1, 1, 1, 1), "max_groups": 4}


def _tiny(**kw: object) -> BioResNet:
    torch.manual_seed(0)
    model = biofm.create_model("bioresnet18", **{**TINY, **kw})
    assert isinstance(model, BioResNet)
    _randomise(model)
    return model


def _randomise(model: torch.nn.Module) -> None:
    """Zero-init norms/score make several invariances trivially true; perturb every weight."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def _batch(counts: list[int], size: int = 32, seed: int = 0, names: bool = True) -> PackedBatch:
    return random_batch(counts, size, seed, names)


@pytest.fixture(scope="module")
def model() -> BioResNet:
    return _tiny().eval()


def test_mixed_channel_counts_forward_backward() -> None:
    m = _tiny(drop_path=0.1).train()
    counts = [1, 2, 3, 5, 8, 10]
    out = m(_batch(counts))
    assert out.shape == (len(counts), m.embed_dim) == (6, 32)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for name in ("stem.conv.weight", "fusion.score.weight", "fusion.proj.weight",
                 "stages.0.0.conv1.weight", "stages.3.0.conv2.weight", "channel_embed.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_single_image_train_mode_and_odd_size() -> None:
    m = _tiny().train()
    assert m(_batch([3], size=32)).shape == (1, 32)
    tok = m.eval().forward_tokens(_batch([2, 4], size=45))
    assert tok.grid == (2, 2)
    assert tok.patches.shape == (2, 4, 32)


def test_default_variants_dims() -> None:
    assert biofm.create_model("bioresnet18", channels_last=False).embed_dim == 512
    m50 = biofm.create_model("bioresnet50", widths=(4, 4, 4, 8), stem_width=8,
                             layers=(1, 1, 1, 1))
    assert m50.embed_dim == 32
    with torch.no_grad():
        assert m50.eval()(_batch([2, 3])).shape == (2, 32)


def test_embedding_same_alone_or_batched(model: BioResNet) -> None:
    assert_same_alone_or_batched(model, _batch([2, 5, 5, 1, 7], seed=4))


@pytest.mark.parametrize("channels_last", [True, False])
def test_segment_pooling_equals_per_image_loop(channels_last: bool) -> None:
    m = _tiny(channels_last=channels_last)
    counts = torch.tensor([3, 1, 5, 2])
    idx = torch.repeat_interleave(torch.arange(4), counts)
    x = torch.randn(11, 8, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        attn, mean, mx = m.fusion.pool(x, idx, counts)
        assert m.fusion.score is not None
        scores = m.fusion.score(x)
    for i, xi in enumerate(torch.split(x, counts.tolist())):
        wi = torch.softmax(scores[idx == i], dim=0)  # (C_i, 1, h, w)
        torch.testing.assert_close(attn[i], (wi * xi).sum(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(mean[i], xi.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(mx[i], xi.amax(0), atol=0, rtol=0)


def _permuted(batch: PackedBatch, seed: int, with_ids: bool = True) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    ims, ids = [], []
    for im, s, e in zip(batch.images(), batch.offsets[:-1].tolist(), batch.offsets[1:].tolist(),
                        strict=True):
        perm = torch.randperm(im.shape[0], generator=g)
        ims.append(im[perm])
        own = batch.channel_ids[s:e]
        ids.append((own[perm] if with_ids else own).tolist())
    return PackedBatch.from_images(ims, ids)


@pytest.mark.parametrize("fusion", ["attention", "meanmax"])
def test_channel_permutation_invariance(fusion: str) -> None:
    m = _tiny(fusion=fusion).eval()
    batch = _batch([3, 5, 1, 4], seed=7)
    perm = _permuted(batch, seed=8)
    assert not torch.equal(perm.planes, batch.planes)
    with torch.no_grad():
        ref, out = m(batch), m(perm)
        # permuting channels but not their ids changes what the model sees
        shuffled = m(_permuted(batch, seed=8, with_ids=False))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(shuffled, ref, atol=1e-4)


def test_identity_none_ignores_ids_and_order() -> None:
    m = _tiny(channel_identity="none").eval()
    assert not m.uses_channel_ids and m.channel_embed is None
    batch = _batch([3, 5, 2], seed=9)
    with torch.no_grad():
        ref = m(batch)
        out = m(_permuted(batch, seed=10, with_ids=False))
        no_names = m(PackedBatch.from_images(batch.images()))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(no_names, ref, atol=1e-5, rtol=0)


def test_unknown_ids_work_and_out_of_vocab_raises(model: BioResNet) -> None:
    batch = _batch([2, 3], names=False)
    assert batch.channel_ids.eq(0).all()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()
    bad = _batch([2])
    bad.channel_ids[:] = len(DEFAULT_VOCAB)
    with pytest.raises(BadInputError, match=r"vocabulary.*Fix: map channel names"):
        model(bad)


def test_forward_tokens(model: BioResNet) -> None:
    batch = _batch([1, 3, 2], size=64)
    with torch.no_grad():
        tok = model.forward_tokens(batch)
        emb = model(batch)
    assert tok.per_plane is False
    assert tok.grid == (2, 2)
    assert tok.cls.shape == (3, 32)
    assert tok.patches.shape == (3, 4, 32)
    torch.testing.assert_close(tok.cls, emb)
    # every token went through the final LayerNorm (affine perturbed: check the raw stats)
    norm = model.norm
    raw = (tok.patches - norm.bias) / norm.weight
    torch.testing.assert_close(raw.mean(-1), torch.zeros(3, 4), atol=1e-4, rtol=0)


def test_forward_intermediates(model: BioResNet) -> None:
    batch = _batch([1, 3, 3])
    assert model.num_blocks == 4
    with torch.no_grad():
        inter = model.forward_intermediates(batch, blocks=[0, -1])
        emb = model(batch)
        everything = model.forward_intermediates(batch)
    assert sorted(inter) == [0, 3]
    assert inter[0].shape == (3, 8)
    assert inter[3].shape == (3, 32)
    assert [v.shape[1] for v in everything.values()] == [8, 16, 16, 32]
    torch.testing.assert_close(inter[3], emb)
    with pytest.raises(BadInputError, match="block 4 does not exist"):
        model.forward_intermediates(batch, blocks=[4])
    with pytest.raises(BadInputError, match="block -5 does not exist"):
        model.forward_intermediates(batch, blocks=[-5])


def test_bad_inputs_name_the_fix(model: BioResNet) -> None:
    with pytest.raises(BadInputError, match=r"smaller than BioResNet.s minimum of 32x32.*Fix"):
        model(_batch([2], size=16))
    with pytest.raises(BadInputError, match=r"float.*Fix: normalise"):
        model(PackedBatch(torch.zeros(2, 32, 32, dtype=torch.int32),
                          torch.zeros(2, dtype=torch.long), torch.tensor([2])))
    for entry in (model.forward_tokens, model.forward_intermediates):
        with pytest.raises(BadInputError, match="minimum of 32x32"):
            entry(_batch([1, 2], size=31))


def test_bad_config_names_the_fix() -> None:
    with pytest.raises(BadInputError, match=r"fusion='sum'.*Fix: use one of"):
        biofm.create_model("bioresnet18", fusion="sum")
    with pytest.raises(BadInputError, match=r"no option.*widht"):
        biofm.create_model("bioresnet18", widht=(1, 2))
    with pytest.raises(BadInputError, match="one entry per stage"):
        biofm.create_model("bioresnet18", widths=(8, 16))


def test_config_roundtrips_through_card() -> None:
    m = _tiny()
    card = m.card()
    assert card["architecture"] == "BioResNet"
    assert card["input"]["min_size"] == 32 and card["input"]["channel_ids"] == "vocab"
    rebuilt = biofm.create_model(card["model_name"],
                                 **{k: list(v) if isinstance(v, tuple) else v
                                    for k, v in card["model_kwargs"].items()})
    assert isinstance(rebuilt, BioResNet)
    assert rebuilt.config_dict() == m.config_dict()


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last(channels_last: bool) -> None:
    m = _tiny(channels_last=channels_last).eval()
    seen: list[torch.Tensor] = []
    handle = m.fusion.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        m(_batch([2, 3], size=40))
    handle.remove()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert seen[0].shape == (2, 8, 10, 10)
    assert seen[0].is_contiguous(memory_format=fmt)
    assert m.stages[1][0].conv1.weight.is_contiguous(memory_format=fmt)


def test_save_load_round_trip(tmp_path: Path) -> None:
    m = _tiny().eval()
    names = list(m.state_dict())
    assert len(names) == len(set(names)) and not any("last_norm" in n for n in names)
    save_encoder(m, tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    batch = _batch([2, 5], seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), m(batch), atol=1e-6, rtol=0)


def test_residual_blocks_start_as_identity() -> None:
    torch.manual_seed(0)
    m = biofm.create_model("bioresnet50", **TINY)
    assert isinstance(m, BioResNet)
    for name, p in m.named_parameters():
        if name.endswith(("0.norm3.weight", "fusion.score.weight")):
            assert p.abs().sum() == 0, name
    assert m.channel_embed is not None
    assert 0 < m.channel_embed.weight.std() < 0.03
