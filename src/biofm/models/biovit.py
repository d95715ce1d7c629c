"""BioViT: a channel-adaptive ViT with pad-free packing of mixed channel counts.

Every (image, channel) plane is cut into patches by one shared patch embedding; each token gets
a 2-D position embedding and a channel-identity embedding; an image's tokens (all its channels,
plus a CLS token) attend jointly. Images never attend to each other. Images are grouped by
channel count so each group is a dense (B_g, 1 + C_g * N, D) sequence: compute scales with the
real number of channel tokens, never with a padded maximum.
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
from biofm.models.vit_base import PlaneViTEncoder

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
    # "grouped": images batched by channel count, dense SDPA per group (flash kernels on GPU);
    # "flex": all images in one packed sequence, FlexAttention with a block-diagonal mask
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
    def _groups(self, batch: PackedBatch) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(C, image indices, plane indices) for each distinct channel count."""
        counts = batch.counts.cpu()
        offsets = batch.offsets.cpu()
        out = []
        for c in torch.unique(counts).tolist():
            imgs = torch.nonzero(counts == c).flatten()
            planes = (offsets[imgs][:, None] + torch.arange(c)[None]).flatten()
            out.append((c, imgs, planes))
        return out

    def _run(
        self, batch: PackedBatch, collect: Sequence[int] = ()
    ) -> tuple[TokenOutput, dict[int, torch.Tensor]]:
        if self.cfg.attn_impl == "flex":
            return self._run_flex(batch, collect)
        tok, grid = self.embed_planes(batch)
        n, d = tok.shape[1], tok.shape[2]
        device = tok.device
        cls_parts, patch_parts, inter_parts = [], [], []
        img_order, plane_order = [], []
        for c, imgs, planes in self._groups(batch):
            single = len(imgs) == batch.num_images
            x = tok if single else tok[planes.to(device)]
            x = x.reshape(len(imgs), c * n, d)  # (B_g, C*N, D)
            x = torch.cat([self.cls_token.expand(len(imgs), -1, -1).to(x.dtype), x], dim=1)
            inter: dict[int, torch.Tensor] = {}
            for i, blk in enumerate(self.blocks):
                x = blk(x)  # (B_g, 1 + C*N, D)
                if i in collect:
                    inter[i] = self._pool(self.norm(x))
            x = self.norm(x)
            cls_parts.append(self._pool(x))
            patch_parts.append(x[:, 1:].reshape(len(imgs) * c, n, d))
            inter_parts.append(inter)
            img_order.append(imgs)
            plane_order.append(planes)
        inv_img = torch.argsort(torch.cat(img_order)).to(device)
        inv_plane = torch.argsort(torch.cat(plane_order)).to(device)
        cls = torch.cat(cls_parts)[inv_img]
        patches = torch.cat(patch_parts)[inv_plane]
        inters = {b: torch.cat([p[b] for p in inter_parts])[inv_img] for b in collect}
        return TokenOutput(cls=cls, patches=patches, grid=grid), inters

    def _run_flex(
        self, batch: PackedBatch, collect: Sequence[int] = ()
    ) -> tuple[TokenOutput, dict[int, torch.Tensor]]:
        """All images in one (1, L, D) sequence [cls_0, planes of 0, cls_1, ...] with a
        block-diagonal FlexAttention mask: L = B + P * N, no padding, no grouping."""
        from torch.nn.attention.flex_attention import create_block_mask

        tok, grid = self.embed_planes(batch)
        if tok.device.type == "cpu" and tok.requires_grad:
            raise BadInputError(
                "attn_impl='flex' cannot train on CPU (FlexAttention has no CPU backward)",
                "use attn_impl='grouped' (the default) on CPU, or run under torch.no_grad()",
            )
        p, n, d = tok.shape
        b, device = batch.num_images, tok.device
        counts, offsets = batch.counts.to(device), batch.offsets.to(device)
        img_of_plane = batch.image_index.to(device)
        cls_pos = torch.arange(b, device=device) + offsets[:-1] * n
        # plane j's k-th token sits after the CLS tokens of images 0..img(j): one per image
        tok_pos = (img_of_plane + torch.arange(p, device=device) * n + 1)[:, None] \
            + torch.arange(n, device=device)[None]  # (P, N)
        length = b + p * n
        doc = torch.repeat_interleave(torch.arange(b, device=device), 1 + counts * n)
        x = tok.new_empty(length, d)
        x[cls_pos] = self.cls_token[0, 0].to(tok.dtype)
        x[tok_pos.flatten()] = tok.reshape(p * n, d)

        def same_image(_b: Any, _h: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return doc[q] == doc[kv]

        mask = create_block_mask(same_image, None, None, length, length, device=device)
        seq = x[None]
        is_patch = torch.ones(length, dtype=torch.bool, device=device)
        is_patch[cls_pos] = False
        inter: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            seq = blk(seq, block_mask=mask, segment=doc)
            if i in collect:
                inter[i] = self._pool_packed(self.norm(seq[0]), cls_pos, doc, is_patch, b)
        out = self.norm(seq[0])
        cls = self._pool_packed(out, cls_pos, doc, is_patch, b)
        patches = out[tok_pos.flatten()].reshape(p, n, d)
        return TokenOutput(cls=cls, patches=patches, grid=grid), inter

    def _pool_packed(self, x: torch.Tensor, cls_pos: torch.Tensor, doc: torch.Tensor,
                     is_patch: torch.Tensor, b: int) -> torch.Tensor:
        """(L, D) packed normalised tokens -> (B, D) image embeddings."""
        if self.cfg.pool == "cls":
            return x[cls_pos]
        sums = x.new_zeros(b, x.shape[1]).index_add_(0, doc[is_patch], x[is_patch])
        n_tok = torch.bincount(doc[is_patch], minlength=b).to(x.dtype)
        return sums / n_tok[:, None]

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
