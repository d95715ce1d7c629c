"""Padded reference forward (the ChAda-ViT scheme): every image padded to ``max_channels``.

Uses the same weights as the packed model; exists for tests and benchmarks only.
"""

from __future__ import annotations

import torch

from biofm.core.batch import PackedBatch
from biofm.models.base import TokenOutput
from biofm.models.biovit import BioViT


def padded_forward_tokens(
    model: BioViT, batch: PackedBatch, max_channels: int | None = None
) -> tuple[TokenOutput, torch.Tensor]:
    """Run ``model`` on the batch padded to ``max_channels`` with a key-padding mask.

    Returns the outputs (patches for real planes only, in the batch's plane order) and the
    (B, Cmax) mask of real channels.
    """
    x, ids, mask = batch.padded(max_channels)  # (B, Cmax, H, W), (B, Cmax), (B, Cmax)
    b, cmax, h, w = x.shape
    flat = PackedBatch(
        planes=x.reshape(b * cmax, h, w),
        channel_ids=ids.reshape(-1),
        counts=torch.full((b,), cmax, dtype=torch.long, device=x.device),
    )
    tok, grid = model.embed_planes(flat)  # (B*Cmax, N, D)
    n, d = tok.shape[1], tok.shape[2]
    seq = tok.reshape(b, cmax * n, d)
    seq = torch.cat([model.cls_token.expand(b, -1, -1), seq], dim=1)  # (B, 1 + Cmax*N, D)
    key_mask = torch.cat(
        [mask.new_ones(b, 1), mask[:, :, None].expand(b, cmax, n).reshape(b, cmax * n)], dim=1
    )
    for blk in model.blocks:
        seq = blk(seq, key_padding_mask=key_mask)
    seq = model.norm(seq)
    patches = seq[:, 1:].reshape(b, cmax, n, d)[mask]  # (P, N, D) real planes only
    if model.cfg.pool == "mean":
        per_token = torch.cat([mask.new_zeros(b, 1), key_mask[:, 1:]], dim=1)
        weights = per_token.to(seq.dtype)[..., None]  # (B, L, 1): real patch tokens only
        pooled = (seq * weights).sum(1) / weights.sum(1)
    else:
        pooled = seq[:, 0]
    return TokenOutput(cls=pooled, patches=patches, grid=grid), mask


def padded_forward(model: BioViT, batch: PackedBatch, max_channels: int | None = None
                   ) -> torch.Tensor:
    """(B, D) embeddings through the padded reference path."""
    return padded_forward_tokens(model, batch, max_channels)[0].cls
