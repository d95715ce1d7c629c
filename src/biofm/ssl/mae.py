"""Masked autoencoding for channel-agnostic ViTs (CA-MAE plus ChA-MAEViT's channel masking).

An image of C channels is C * N channel-patch tokens. Masking hides whole channels first
(``channel_mask_ratio``; one channel always stays visible) and spends the rest of the
``mask_ratio`` budget on random tokens. The encoder sees the visible tokens plus CLS; a light
decoder puts a learned mask token at every hidden position, adds a fixed 2-D sin-cos position
and a channel identity, and predicts each hidden token's own p x p patch. Loss:
``(1 - w) * MSE + w * Fourier`` over hidden tokens (CA-MAE uses w = 0.01).

* BioViT (``attn_impl="grouped"``): an image's C * N tokens are one sequence; images are grouped
  by channel count so each group is dense with the same K visible tokens per image.
* BoCViT: every plane is its own sequence (C = 1, no channel masking). MAE does not use the
  fusion, so only ``fusion="mean"`` (no parameters) is accepted: every trainable parameter gets
  a gradient and plain DDP works.

Randomness: global view ``v`` of dataset item ``index`` draws its noise from
``generator_for(seed, step, index, v)`` (``index`` from the packed image's meta, else from
``views.meta[i % batch_size]``), so masks depend neither on batch order nor on how a global
batch is split over processes; ``step`` is a buffer advanced by ``on_step_end``. Images without
an index draw from the global torch RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError, ConfigError
from biofm.data.rng import generator_for
from biofm.models.biovit import BioViT
from biofm.models.boc_vit import BoCViT
from biofm.nn.embed import init_vit_weights, sincos_2d, trunc_normal_
from biofm.nn.layers import Block
from biofm.ssl.base import Objective, Views
from biofm.ssl.masking import (
    channel_patch_mask,
    fourier_per_image,
    mse_per_image,
    normalize_patches,
    patchify,
)


@dataclass(frozen=True)
class MAEConfig:
    mask_ratio: float = 0.75  # fraction of an image's channel-patch tokens hidden
    channel_mask_ratio: float = 0.25  # fraction of channels hidden whole (C > 1)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # targets normalised per patch
    fourier_weight: float = 0.01  # loss = (1 - w) * MSE + w * Fourier; 0 disables
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("mask_ratio", "channel_mask_ratio", "fourier_weight"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"mae.{key}={getattr(self, key)} is outside [0, 1)",
                                  f"set mae.{key} in [0, 1), e.g. {getattr(MAEConfig, key)}")
        for key in ("decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mae.{key}={getattr(self, key)} is below 1",
                                  f"set mae.{key} >= 1")
        if self.decoder_dim % 4 or self.decoder_dim % self.decoder_heads:
            raise ConfigError(f"mae.decoder_dim={self.decoder_dim} is not a multiple of 4 and "
                              f"of decoder_heads={self.decoder_heads}",
                              "use e.g. decoder_dim=128 with decoder_heads=4")


# ---------------------------------------------------------------------- pure functions
class MAEDecoder(nn.Module):
    """Latent -> mask tokens unshuffled to all C*N positions -> blocks -> p*p pixels."""

    def __init__(self, enc_dim: int, cfg: MAEConfig, patch: int, n_ids: int) -> None:
        super().__init__()
        dim = cfg.decoder_dim
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.channel_embed = nn.Embedding(n_ids, dim)
        self.blocks = nn.ModuleList(Block(dim, cfg.decoder_heads) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, patch * patch)
        self.apply(init_vit_weights)
        trunc_normal_(self.mask_token)
        trunc_normal_(self.channel_embed.weight)

    def forward(self, latent: torch.Tensor, ids_keep: torch.Tensor, chan: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """latent (B, 1+K, D_enc) [CLS, visible], ids_keep (B, K), chan (B, C) identity ids
        -> predicted patches (B, C*N, p*p)."""
        x = self.embed(latent)  # (B, 1+K, Dd)
        b, c, dd = x.shape[0], chan.shape[1], x.shape[2]
        n = grid[0] * grid[1]
        # stage 1: mask tokens everywhere, visible latents scattered back to their positions
        full = self.mask_token.to(x.dtype).expand(b, c * n, dd)
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, dd), x[:, 1:])  # (B, C*N, Dd)
        # stage 2: position (per patch, repeated per channel) + channel identity
        pos = sincos_2d(grid[0], grid[1], dd, x.device).to(x.dtype)  # (N, Dd)
        full = full + pos.repeat(c, 1)
        full = full + self.channel_embed(chan).repeat_interleave(n, dim=1)  # (B, C*N, Dd)
        x = torch.cat([x[:, :1], full], dim=1)  # (B, 1+C*N, Dd)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 1:]))  # (B, C*N, p*p)


@dataclass
class _Group:
    """Sequences of one channel count: tokens (S, C*N, D), targets (S, C*N, p*p), channel
    identity ids (S, C), noise (S, C) and (S, C*N), owner (S,) image of each sequence."""

    tokens: torch.Tensor
    targets: torch.Tensor
    chan: torch.Tensor
    channel_noise: torch.Tensor
    patch_noise: torch.Tensor
    owner: torch.Tensor


def _check_backbone(backbone: nn.Module) -> None:
    if isinstance(backbone, BioViT):
        if backbone.cfg.attn_impl != "grouped":
            raise ConfigError(f"MAE cannot use attn_impl={backbone.cfg.attn_impl!r}",
                              "build the BioViT with attn_impl='grouped' for objective mae")
    elif isinstance(backbone, BoCViT):
        if backbone.fusion is not None:
            raise ConfigError("MAE does not train BoCViT's attention fusion",
                              "build the BoCViT with fusion='mean' for objective mae")
    else:
        raise ConfigError(f"objective mae needs a BioViT or BoCViT, got {type(backbone).__name__}",
                          "use objective dino or simclr for CNNs such as BioResNet")


class MAE(Objective):
    """Masked-autoencoder objective around a BioViT or BoCViT backbone (module docstring)."""

    name = "mae"

    def __init__(self, backbone: nn.Module, cfg: MAEConfig, total_steps: int) -> None:
        super().__init__()
        _check_backbone(backbone)
        self.backbone: BioViT | BoCViT = backbone  # type: ignore[assignment]
        self.cfg = cfg
        self.total_steps = total_steps
        self.patch = int(self.backbone.cfg.patch_size)
        self.joint = isinstance(backbone, BioViT)
        self.n_ids = (self.backbone.vocab_size if self.backbone.uses_channel_ids
                      else int(getattr(self.backbone.cfg, "max_channels", 1)))
        self.decoder = MAEDecoder(self.backbone.embed_dim, cfg, self.patch, self.n_ids)
        self.step: torch.Tensor
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def fsdp_units(self) -> list[nn.Module]:
        """None: MAE runs the backbone's parts, not its ``forward``, so the backbone is
        sharded with the objective as one unit."""
        return []

    @torch.no_grad()
    def on_step_end(self) -> None:
        self.step += 1

    # ------------------------------------------------------------------ noise and groups
    def noise(self, views: Views, n: int) -> list[torch.Tensor]:
        """Per image of the global views: (C_i + C_i * N,) uniform noise (module docstring)."""
        batch, size = views.global_views, max(1, views.batch_size)
        samples = getattr(views, "meta", None) or []
        step, out = int(self.step), []
        for i, c in enumerate(batch.counts.tolist()):
            own = batch.meta[i] if i < len(batch.meta) else {}
            index = own.get("index")
            if index is None and i % size < len(samples):
                index = samples[i % size].get("index")
            view = int(own.get("view", i // size))
            gen = None if index is None else generator_for(self.cfg.seed, step, int(index), view)
            out.append(torch.rand(c * (1 + n), generator=gen))
        return out

    def _groups(self, batch: PackedBatch, tok: torch.Tensor, views: Views) -> list[_Group]:
        """Dense groups: BioViT one per channel count, BoCViT one of all planes (C = 1)."""
        pix = patchify(batch.planes.float(), self.patch)  # (P, N, p*p)
        if self.cfg.norm_pix_loss:
            pix = normalize_patches(pix)
        ids = batch.channel_ids.to(tok.device) if self.backbone.uses_channel_ids else None
        noise = self.noise(views, tok.shape[1])
        if not self.joint:
            return [self._plane_group(batch, tok, pix, ids, noise)]
        if ids is None and int(batch.counts.max()) > self.n_ids:
            raise BadInputError(f"an image has {int(batch.counts.max())} channels but the MAE "
                                f"decoder has {self.n_ids} channel slots",
                                "build the backbone with a larger max_channels")
        counts, offsets = batch.counts.cpu(), batch.offsets.cpu()
        n, d, dev = tok.shape[1], tok.shape[2], tok.device
        groups = []
        for c in torch.unique(counts).tolist():
            imgs = torch.nonzero(counts == c).flatten()
            b = len(imgs)
            planes = (offsets[imgs][:, None] + torch.arange(c)[None]).flatten().to(dev)
            z = torch.stack([noise[i] for i in imgs.tolist()]).to(dev)  # (B_g, C + C*N)
            chan = ids[planes].reshape(b, c) if ids is not None \
                else torch.arange(c, device=dev).expand(b, c)  # (B_g, C)
            groups.append(_Group(tok[planes].reshape(b, c * n, d),  # (B_g, C*N, D)
                                 pix[planes].reshape(b, c * n, -1),  # (B_g, C*N, p*p)
                                 chan, z[:, :c], z[:, c:], imgs.to(dev)))
        return groups

    @staticmethod
    def _plane_group(batch: PackedBatch, tok: torch.Tensor, pix: torch.Tensor,
                     ids: torch.Tensor | None, noise: list[torch.Tensor]) -> _Group:
        """BoCViT: every plane is a one-channel sequence (no channel masking); plane j of an
        image takes the j-th N values of the image's patch noise."""
        n, p, dev = tok.shape[1], tok.shape[0], tok.device
        patch_noise = torch.cat([z[c:].reshape(c, n) for z, c in
                                 zip(noise, batch.counts.tolist(), strict=True)])  # (P, N)
        chan = ids[:, None] if ids is not None else torch.zeros(p, 1, dtype=torch.long,
                                                               device=dev)  # (P, 1)
        return _Group(tok, pix, chan, torch.zeros(p, 1, device=dev), patch_noise.to(dev),
                      batch.image_index.to(dev))

    # ------------------------------------------------------------------ forward
    def _encode(self, tokens: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """tokens (S, L, D), ids_keep (S, K) -> normalised [CLS, visible] (S, 1+K, D)."""
        s, d = tokens.shape[0], tokens.shape[2]
        x = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d))  # (S, K, D)
        cls = self.backbone.cls_token.expand(s, -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)  # (S, 1+K, D)
        for blk in self.backbone.blocks:
            x = blk(x)
        out: torch.Tensor = self.backbone.norm(x)
        return out

    def forward(self, views: Views) -> dict[str, Any]:
        batch = views.global_views
        tok, grid = self.backbone.embed_planes(batch)  # (P, N, D)
        b_all, w = batch.num_images, self.cfg.fourier_weight
        mse = tok.new_zeros(b_all, dtype=torch.float32)
        four, feats = torch.zeros_like(mse), mse.new_zeros(b_all, tok.shape[2])
        seqs = torch.zeros_like(mse)
        hidden, total = 0, 0
        for g in self._groups(batch, tok, views):
            ids_keep, mask = channel_patch_mask(g.channel_noise, g.patch_noise,
                                                self.cfg.mask_ratio, self.cfg.channel_mask_ratio)
            latent = self._encode(g.tokens, ids_keep)  # (S, 1+K, D)
            pred = self.decoder(latent, ids_keep, g.chan, grid)  # (S, C*N, p*p)
            mse = mse.index_add(0, g.owner, mse_per_image(pred, g.targets, mask))
            if w > 0:
                four = four.index_add(0, g.owner,
                                      fourier_per_image(pred, g.targets, mask, self.patch))
            feats = feats.index_add(0, g.owner, latent[:, 1:].detach().float().mean(dim=1))
            seqs = seqs.index_add(0, g.owner, torch.ones_like(g.owner, dtype=seqs.dtype))
            hidden, total = hidden + mask.numel() - ids_keep.numel(), total + mask.numel()
        # per-image means (a BoC image's planes each hide the same number of tokens)
        mse_img, four_img = mse / seqs, four / seqs
        loss = (1 - w) * mse_img.mean() + w * four_img.mean()
        features = (feats / seqs[:, None])[: views.batch_size]  # (B, D)
        return {"loss": loss, "features": features.detach(),
                "loss_mse": float(mse_img.detach().mean()),
                "loss_fourier": float(four_img.detach().mean()),
                "mask_ratio": hidden / max(1, total)}
