"""BioViT: a channel-adaptive ViT with pad-free packing of mixed channel counts.

Every (image, channel) plane is cut into patches by one shared patch embedding; each token gets
a 2-D position embedding and a channel-identity embedding; an image's tokens (all its channels,
plus a CLS token) attend jointly. Images never attend to each other. All images of a batch form
one pad-free (1, B + P * N, D) sequence ordered by channel count: norms, projections and MLPs
run once over it, and attention runs per image (one dense SDPA call per channel count, or one
FlexAttention call with a block-diagonal mask): compute scales with the real number of channel
tokens, never with a padded maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.models.base import TokenOutput
from biofm.models.packed_layout import PackedLayout, build_layout
from biofm.models.vit_base import PlaneViTEncoder
from biofm.nn.segment import segment_mean

CHANNEL_IDENTITY_MODES = ("vocab", "position", "none")
POOL_MODES = ("cls", "mean")
ATTN_IMPLS = ("grouped", "flex")


@dataclass(frozen=True)
class BioViTConfig:
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    channel_identity: str = "vocab"
    vocab_size: int = len(DEFAULT_VOCAB)
    max_channels: int = 32
    drop_path: float = 0.0
    layerscale: float | None = None
    img_size: int = 224
    pos_gain_init: float = 0.02
    pool: str = "cls"  # image embedding: "cls" token or "mean" of all channel-patch tokens
    # "grouped": dense SDPA per run of images of one channel count (flash kernels on GPU);
    # "flex": FlexAttention over the whole packed sequence with a block-diagonal mask
    attn_impl: str = "grouped"


class BioViT(PlaneViTEncoder):
    """Joint attention over all channel tokens of an image, pad-free (module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        cfg = BioViTConfig(**kwargs)  # type: ignore[arg-type]
        if cfg.pool not in POOL_MODES:
            raise BadInputError(f"pool={cfg.pool!r} is not a pooling mode",
                                f"use one of {POOL_MODES}")
        if cfg.attn_impl not in ATTN_IMPLS:
            raise BadInputError(f"attn_impl={cfg.attn_impl!r} is not an attention back-end",
                                f"use one of {ATTN_IMPLS}")
        self._build_trunk(cfg)
        self._init_trunk()

    def config_dict(self) -> dict[str, object]:
        return asdict(self.cfg)

    # ------------------------------------------------------------------ trunk
    def _run(
        self, batch: PackedBatch, collect: Sequence[int] = ()
    ) -> tuple[TokenOutput, dict[int, torch.Tensor]]:
        """All images as one (1, L, D) sequence (``packed_layout``): token-wise maths once over
        all L = B + P * N tokens, attention restricted to each image."""
        tok, grid = self.embed_planes(batch)  # (P, N, D)
        p, n, d = tok.shape
        if self.cfg.attn_impl == "flex" and tok.device.type == "cpu" and tok.requires_grad:
            raise BadInputError(
                "attn_impl='flex' cannot train on CPU (FlexAttention has no CPU backward)",
                "use attn_impl='grouped' (the default) on CPU, or run under torch.no_grad()",
            )
        layout = build_layout(batch.counts, n, tok.device)
        rows = torch.cat([self.cls_token.reshape(1, d).to(tok.dtype), tok.reshape(p * n, d)])
        seq = rows.index_select(0, layout.source)[None]  # (1, L, D)
        kw = self._attention_kwargs(layout)
        segment = layout.segment if self.training and self.cfg.drop_path > 0 else None
        inter: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            seq = blk(seq, segment=segment, **kw)
            if i in collect:
                inter[i] = self._pool_packed(self.norm(seq[0]), layout, batch)
        out = self.norm(seq[0])  # (L, D)
        patches = out.index_select(0, layout.token_pos).reshape(p, n, d)  # (P, N, D)
        cls = self._pool_packed(out, layout, batch, patches)
        return TokenOutput(cls=cls, patches=patches, grid=grid), inter

    def _attention_kwargs(self, layout: PackedLayout) -> dict[str, Any]:
        if self.cfg.attn_impl == "grouped":
            return {"groups": layout.groups}
        from torch.nn.attention.flex_attention import create_block_mask

        doc, length = layout.segment, layout.length

        def same_image(_b: Any, _h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return doc[q] == doc[kv]

        mask = create_block_mask(same_image, None, None, length, length, device=doc.device)
        return {"block_mask": mask}

    def _pool_packed(self, x: torch.Tensor, layout: PackedLayout, batch: PackedBatch,
                     patches: torch.Tensor | None = None) -> torch.Tensor:
        """(L, D) packed normalised tokens -> (B, D) image embeddings (batch order)."""
        if self.cfg.pool == "cls":
            return x.index_select(0, layout.cls_pos)
        if patches is None:
            patches = x.index_select(0, layout.token_pos).reshape(batch.planes.shape[0], -1,
                                                                  x.shape[1])
        index = batch.image_index.to(x.device)
        return segment_mean(patches.mean(dim=1), index, batch.counts.to(x.device))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B_g, 1 + C*N, D) normalised tokens -> (B_g, D) image embeddings."""
        return x[:, 0] if self.cfg.pool == "cls" else x[:, 1:].mean(dim=1)

    # ------------------------------------------------------------------ contract
    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """(B, D) image embeddings (CLS token or token mean, after the final norm)."""
        return self._run(batch)[0].cls

    def forward_tokens(self, batch: PackedBatch) -> TokenOutput:
        """Dense outputs: CLS and every plane's patch tokens."""
        return self._run(batch)[0]

    def forward_intermediates(
        self, batch: PackedBatch, blocks: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Per-block pooled features: {block index: (B, D)} (final norm applied, then pooled)."""
        return self._run(batch, collect=self.resolve_blocks(blocks))[1]
