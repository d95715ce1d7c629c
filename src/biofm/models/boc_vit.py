"""Bag-of-channels ViT (BoC): one shared ViT encodes every channel alone, then an
order-invariant fusion turns the per-channel embeddings into one image embedding.

Design
------
* **Trunk.** Every (image, channel) plane of a :class:`~biofm.core.batch.PackedBatch` is a
  single-channel image. All P planes of the batch form one dense ``(P, 1 + N, D)`` sequence
  batch (a CLS token per plane) and the same transformer blocks run over all of them at once:
  no padding, no grouping by channel count, no per-image loop. A plane never attends to
  another plane, so its tokens depend only on its own pixels (and its stain id when
  ``channel_identity="vocab"``), never on which other channels the image has.
* **Channel identity.** ``"vocab"`` adds a learned embedding of the plane's stain
  (``channel_ids`` into ``DEFAULT_VOCAB``, 0 = unknown) to all of its tokens; ``"none"`` makes
  the encoder blind to stain names (only pixels matter).
* **Fusion.** ``"attention"`` (default): multi-head attention pooling with one learned query
  over the CLS embeddings of the image's planes; the softmax runs over the planes of each
  image (a segment softmax over ``batch.image_index``, stabilised with a segment max), then an
  output projection and a LayerNorm. ``"mean"``: the mean of the planes' CLS embeddings.
  Both are invariant to channel order and defined for any channel count (a one-channel image
  is a function of its plane's embedding alone), and both are vectorised over the whole batch
  with scatter/index-add, so mixed channel counts need no padding here either.

Why
---
Under self-supervision, bag-of-channels is a strong baseline for channel-adaptive models: on
CHAMMI-75 it matches or beats joint channel attention (by up to ~19%) at a fraction of the
compute. The sequence length stays that of one channel and channels become batch items, so
attention costs ``P * N^2`` per batch (linear in the number of channels), never the
``C^2 * N^2`` per image of joint attention over all channel tokens (BioViT). The price is that
channels interact only in the light-weight fusion, not inside the trunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.models.base import TokenOutput
from biofm.models.registry import register_model
from biofm.models.vit_base import PlaneViTEncoder
from biofm.nn.embed import trunc_normal_
from biofm.nn.segment import segment_mean, segment_softmax, segment_sum

CHANNEL_IDENTITY_MODES = ("vocab", "none")
FUSION_MODES = ("attention", "mean")


@dataclass(frozen=True)
class BoCViTConfig:
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    channel_identity: str = "vocab"  # "vocab": learned per-stain embedding; "none": pixels only
    vocab_size: int = len(DEFAULT_VOCAB)
    drop_path: float = 0.0
    layerscale: float | None = None
    pos_gain_init: float = 0.02
    fusion: str = "attention"  # "attention": learned-query attention pool; "mean": CLS mean
    fusion_heads: int | None = None  # heads of the attention pool (None: num_heads)


class AttentionPool(nn.Module):
    """Order- and count-invariant pooling of a variable-size set of vectors per segment.

    One learned query per head scores every member (``q_h . k_h / sqrt(d_h)``); the scores are
    softmaxed over the members of the same segment; the weighted sum of value projections goes
    through an output projection and a LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise BadInputError(f"embed_dim {dim} is not divisible by fusion_heads {num_heads}",
                                "choose fusion_heads that divides embed_dim")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def weights(self, x: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(P, H) attention weights of every member, summing to 1 within each segment/head."""
        k = self.key(x).reshape(x.shape[0], self.num_heads, self.head_dim)
        scores = (k.float() * self.query.float()).sum(-1) / math.sqrt(self.head_dim)
        return segment_softmax(scores, index, num_segments)

    def forward(self, x: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
        """``x`` (P, D) members, ``index`` (P,) their segment -> (num_segments, D)."""
        p, d = x.shape
        w = self.weights(x, index, num_segments)  # (P, H)
        v = self.value(x).reshape(p, self.num_heads, self.head_dim)
        pooled = segment_sum(v.float() * w[..., None], index, num_segments)  # (S, H, d_h)
        out = self.proj(pooled.reshape(num_segments, d).to(x.dtype))
        return self.norm(out)


class BoCViT(PlaneViTEncoder):
    """Bag-of-channels ViT: a shared single-channel ViT trunk plus set fusion (module doc)."""

    identity_modes = CHANNEL_IDENTITY_MODES

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        cfg = BoCViTConfig(**kwargs)
        if cfg.fusion not in FUSION_MODES:
            raise BadInputError(f"fusion={cfg.fusion!r} is not a fusion mode",
                                f"use one of {FUSION_MODES}")
        self._build_trunk(cfg)
        self.fusion = (
            AttentionPool(cfg.embed_dim, cfg.fusion_heads or cfg.num_heads)
            if cfg.fusion == "attention" else None
        )
        self._init_trunk()
        if self.fusion is not None:
            trunc_normal_(self.fusion.query)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def _run(
        self, batch: PackedBatch, collect: Sequence[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], dict[int, torch.Tensor]]:
        """Plane CLS (P, D), plane patches (P, N, D), grid, {block: normalised plane CLS}."""
        tok, grid = self.embed_planes(batch)
        p = tok.shape[0]
        x = torch.cat([self.cls_token.expand(p, -1, -1).to(tok.dtype), tok], dim=1)
        inter: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)  # (P, 1 + N, D): each plane attends only to itself
            if i in collect:
                inter[i] = self.norm(x[:, 0])
        x = self.norm(x)
        return x[:, 0], x[:, 1:], grid, inter

    def fuse(self, plane_cls: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """(P, D) plane embeddings -> (B, D) image embeddings with the configured fusion."""
        index = batch.image_index.to(plane_cls.device)
        if self.fusion is None:
            return segment_mean(plane_cls, index, batch.counts.to(plane_cls.device))
        return self.fusion(plane_cls, index, batch.num_images)

    # ------------------------------------------------------------------ contract
    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """(B, D) image embeddings: plane CLS embeddings fused over each image's channels."""
        plane_cls, _, _, _ = self._run(batch)
        return self.fuse(plane_cls, batch)

    def forward_tokens(self, batch: PackedBatch) -> TokenOutput:
        """Fused CLS (B, D) and every plane's own patch tokens (P, N, D)."""
        plane_cls, patches, grid, _ = self._run(batch)
        return TokenOutput(cls=self.fuse(plane_cls, batch), patches=patches, grid=grid,
                           per_plane=True)

    def forward_intermediates(
        self, batch: PackedBatch, blocks: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Per-block features {block: (B, D)}: each plane's CLS after the final norm, averaged
        over the image's planes.

        Intermediates always use mean fusion, whatever ``fusion`` is: the attention pool is
        trained on the last block's output only, so it is not meaningful for earlier blocks.
        With ``fusion="mean"`` the last block equals ``forward``.
        """
        wanted = self.resolve_blocks(blocks)
        _, _, _, inter = self._run(batch, collect=wanted)
        index = batch.image_index
        counts = batch.counts
        out: dict[int, torch.Tensor] = {}
        for b in wanted:
            v = inter[b]
            out[b] = segment_mean(v, index.to(v.device), counts.to(v.device))
        return out


# ---------------------------------------------------------------------- variants
_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
}


def _boc_vit(size: str, patch: int, kw: dict[str, Any]) -> BoCViT:
    return BoCViT(**{**_SIZES[size], "patch_size": patch, **kw})


@register_model
def boc_vit_tiny(**kw: Any) -> BoCViT:
    """BoC-ViT-Tiny/16: 192-d, 12 blocks, 3 heads, attention fusion (5.50 M parameters)."""
    return _boc_vit("tiny", 16, kw)


@register_model
def boc_vit_small(**kw: Any) -> BoCViT:
    """BoC-ViT-Small/16: 384-d, 12 blocks, 6 heads, attention fusion (21.85 M parameters)."""
    return _boc_vit("small", 16, kw)


@register_model
def boc_vit_small_p8(**kw: Any) -> BoCViT:
    """BoC-ViT-Small/8: 4x the tokens per channel (21.77 M parameters)."""
    return _boc_vit("small", 8, kw)
