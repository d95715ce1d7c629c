"""The packed sequence layout and grouped attention: one SDPA call per channel count equals
attention image by image; training gradients equal the padded reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import biofm
from biofm.models.packed_layout import build_layout
from biofm.models.padded import padded_forward
from biofm.nn.layers import grouped_attention
from tests.models.batches import random_batch


def test_layout_places_every_token_once() -> None:
    counts = torch.tensor([3, 1, 3, 2, 1])
    n = 4
    lay = build_layout(counts, n, torch.device("cpu"))
    length = int((1 + counts * n).sum())
    assert lay.length == length
    assert sum(b * t for b, t in lay.groups) == length
    assert lay.groups == ((2, 5), (1, 9), (2, 13))  # ascending channel count
    pos = torch.cat([lay.cls_pos, lay.token_pos]).sort().values
    assert torch.equal(pos, torch.arange(length))
    assert lay.source[lay.cls_pos].eq(0).all()
    assert torch.equal(lay.source[lay.token_pos], torch.arange(1, int(counts.sum()) * n + 1))
    image = torch.repeat_interleave(torch.arange(5), counts * n)
    assert torch.equal(lay.segment[lay.token_pos], image)
    assert torch.equal(lay.segment[lay.cls_pos], torch.arange(5))


def test_grouped_attention_equals_attention_per_image() -> None:
    torch.manual_seed(0)
    groups = [(2, 5), (1, 9), (3, 7)]
    heads, dh = 2, 8
    qkv = torch.randn(sum(b * n for b, n in groups), 3 * heads * dh)
    out = grouped_attention(qkv, groups, heads)
    start, ref = 0, []
    for b, n in groups:
        for _ in range(b):
            x = qkv[start:start + n].view(n, 3, heads, dh).permute(1, 2, 0, 3)
            ref.append(F.scaled_dot_product_attention(x[0], x[1], x[2]).transpose(0, 1)
                       .reshape(n, heads * dh))
            start += n
    torch.testing.assert_close(out, torch.cat(ref), atol=1e-5, rtol=0)


def test_training_gradients_equal_padded_reference() -> None:
    torch.manual_seed(2)
    model = biofm.create_model("biovit_tiny", depth=2, num_heads=2).train()
    batch = random_batch([1, 3, 10, 2, 3, 5], seed=7)
    grads = []
    for fn in (model, lambda b: padded_forward(model, b, 10)):
        model.zero_grad(set_to_none=True)
        fn(batch).pow(2).mean().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][k], atol=1e-5, rtol=1e-3, msg=k)
