"""Attention back-ends: grouped SDPA (default) vs one packed sequence with FlexAttention; bf16
autocast and regional torch.compile paths."""

from __future__ import annotations

import pytest
import torch

import biofm
from biofm.core import DEFAULT_VOCAB, BadInputError, PackedBatch
from biofm.nn.layers import DropPath


def _batch(counts: list[int], size: int = 32, seed: int = 0) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    ims = [torch.randn(c, size, size, generator=g) for c in counts]
    ids = [torch.randint(0, len(DEFAULT_VOCAB), (c,), generator=g).tolist() for c in counts]
    return PackedBatch.from_images(ims, ids)


def _pair(**kw: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    grouped = biofm.create_model("biovit_tiny", depth=2, **kw).eval()
    flex = biofm.create_model("biovit_tiny", depth=2, attn_impl="flex", **kw).eval()
    flex.load_state_dict(grouped.state_dict())
    return grouped, flex


@pytest.mark.parametrize(("pool", "identity"), [("cls", "vocab"), ("mean", "position"),
                                                ("cls", "none")])
def test_flex_packed_sequence_equals_grouped(pool: str, identity: str) -> None:
    grouped, flex = _pair(pool=pool, channel_identity=identity)
    batch = _batch([1, 3, 10, 2, 5, 3], seed=3)
    with torch.no_grad():
        a, b = grouped.forward_tokens(batch), flex.forward_tokens(batch)
        ia = grouped.forward_intermediates(batch, [0, -1])
        ib = flex.forward_intermediates(batch, [0, -1])
    torch.testing.assert_close(a.cls, b.cls, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.patches, b.patches, atol=1e-4, rtol=0)
    for k in ia:
        torch.testing.assert_close(ia[k], ib[k], atol=1e-4, rtol=0)


def test_flex_keeps_images_apart() -> None:
    _, flex = _pair()
    batch = _batch([4, 2, 7], seed=5)
    with torch.no_grad():
        together = flex(batch)
        alone = flex(PackedBatch(batch.planes[4:6], batch.channel_ids[4:6], torch.tensor([2])))
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=0)


def test_flex_training_on_cpu_names_the_fix() -> None:
    _, flex = _pair()
    with pytest.raises(BadInputError, match="attn_impl='grouped'"):
        flex.train()(_batch([2, 3]))


def test_unknown_attention_backend_is_refused() -> None:
    with pytest.raises(BadInputError, match="attn_impl"):
        biofm.create_model("biovit_tiny", attn_impl="xformers")


def test_drop_path_on_a_packed_sequence_drops_whole_images() -> None:
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    segment = torch.repeat_interleave(torch.arange(6), torch.tensor([3, 5, 2, 4, 1, 6]))
    out = dp(torch.ones(1, len(segment), 4), segment)
    for i in range(6):
        vals = out[0, segment == i].unique()
        assert len(vals) == 1 and vals.item() in (0.0, 2.0)  # kept and rescaled, or dropped


@pytest.mark.parametrize("name", ["biovit_tiny", "boc_vit_tiny", "bioresnet18"])
def test_bf16_autocast_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    kw = {"depth": 2} if "vit" in name else {}
    model = biofm.create_model(name, **kw).train()
    batch = _batch([1, 3, 5], seed=1)
    ref = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.1, f"bf16 output differs from fp32 by {rel:.3f} (relative)"
    out.float().pow(2).mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["biovit_tiny", "boc_vit_tiny", "bioresnet18"])
def test_regional_compile_matches_eager(name: str) -> None:
    torch.manual_seed(0)
    kw = {"depth": 2} if "vit" in name else {}
    eager = biofm.create_model(name, **kw).eval()
    compiled = biofm.create_model(name, **kw).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_regions()
    batch = _batch([1, 3, 5, 3], seed=2)
    with torch.no_grad():
        torch.testing.assert_close(compiled(batch), eager(batch), atol=1e-4, rtol=1e-4)
