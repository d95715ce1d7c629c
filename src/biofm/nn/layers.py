"""Transformer building blocks (torch only): attention through SDPA or FlexAttention, MLP,
pre-norm block.

Attention back-ends: ``F.scaled_dot_product_attention`` on dense (B, L, D) sequences (flash /
memory-efficient kernels on GPU); on one packed (1, L, D) sequence either grouped SDPA
(``groups``: the sequence is runs of equally long images, one dense SDPA call per run, while
the projections run once over all L tokens) or FlexAttention with a block mask
(``block_mask``). Either way images of different lengths attend only within themselves without
padding. FlexAttention is compiled on CUDA; elsewhere it runs unfused (a reference path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_FLEX: dict[str, Any] = {}


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any
                   ) -> torch.Tensor:
    """FlexAttention with ``block_mask``; the compiled kernel on CUDA, eager elsewhere."""
    import warnings

    from torch.nn.attention import flex_attention as fa

    if q.is_cuda:
        if "compiled" not in _FLEX:
            _FLEX["compiled"] = torch.compile(fa.flex_attention, dynamic=False)
        fn = _FLEX["compiled"]
    else:
        fn = fa.flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        out: torch.Tensor = fn(q, k, v, block_mask=block_mask)
    return out


@torch.compiler.disable
def grouped_attention(qkv: torch.Tensor, groups: Sequence[tuple[int, int]], num_heads: int
                      ) -> torch.Tensor:
    """Self-attention within each image of a packed sequence of runs of equal-length images.

    ``qkv`` (L, 3 * D) packed projections; ``groups`` (images, tokens per image) of each run, in
    sequence order (their products sum to L). Returns (L, D). One SDPA call per run on views of
    ``qkv``: no padding, no gathers. Kept out of compiled regions (its loop depends on the batch).
    """
    length, d = qkv.shape[0], qkv.shape[1] // 3
    heads = qkv.view(length, 3, num_heads, d // num_heads).permute(1, 2, 0, 3)  # (3, H, L, dh)
    parts = heads.split([b * n for b, n in groups], dim=2)
    outs = []
    for part, (b, n) in zip(parts, groups, strict=True):
        q, k, v = part.unflatten(2, (b, n)).unbind(0)  # each (H, B_g, n, dh)
        outs.append(F.scaled_dot_product_attention(q, k, v).flatten(1, 2))  # (H, B_g * n, dh)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (H, L, dh)
    return out.permute(1, 0, 2).reshape(length, d)


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention``.

    ``key_padding_mask`` (B, L) marks real tokens with True; used only by the padded reference.
    ``block_mask`` (a FlexAttention BlockMask) or ``groups`` (see :func:`grouped_attention`)
    restricts attention within each image of a packed (1, L, D) sequence.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
        block_mask: Any = None, groups: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        b, n, d = x.shape
        if groups is not None:
            out = grouped_attention(self.qkv(x).reshape(b * n, 3 * d), groups, self.num_heads)
            return self.proj(out.reshape(b, n, d))
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, d_head)
        if block_mask is not None:
            out = flex_attention(q, k, v, block_mask)
            return self.proj(out.transpose(1, 2).reshape(b, n, d))
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, L): True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval or p = 0).

    ``segment`` (L,) gives the image of each token of one packed (1, L, D) sequence; the
    residual branch is then dropped per image instead of per row."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, segment: torch.Tensor | None = None) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        if segment is not None:
            n_img = int(segment.max()) + 1
            keep = x.new_empty(n_img).bernoulli_(1 - self.p)[segment]
            return x * keep[None, :, None] / (1 - self.p)
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layerscale: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls1: nn.Module = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.ls2: nn.Module = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
        block_mask: Any = None, segment: torch.Tensor | None = None,
        groups: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        attn = self.attn(self.norm1(x), key_padding_mask, block_mask, groups)
        x = x + self.drop_path(self.ls1(attn), segment)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))), segment)
