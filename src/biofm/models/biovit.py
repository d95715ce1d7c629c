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

import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.nn.embed import PlanePatchEmbed, init_vit_weights, sincos_2d, trunc_normal_
from biofm.nn.layers import Block

CHANNEL_IDENTITY_MODES = ("vocab", "position", "none")
POOL_MODES = ("cls", "mean")


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


@dataclass
class TokenOutput:
    """``cls`` (B, D) pooled image embedding (CLS token, or token mean with ``pool="mean"``);
    ``patches`` (P, N, D) aligned with the batch's planes; ``grid`` (h, w)."""

    cls: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]


class BioViT(nn.Module):
    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        cfg = BioViTConfig(**kwargs)  # type: ignore[arg-type]
        if cfg.pool not in POOL_MODES:
            raise BadInputError(f"pool={cfg.pool!r} is not a pooling mode",
                                f"use one of {POOL_MODES}")
        if cfg.channel_identity not in CHANNEL_IDENTITY_MODES:
            raise BadInputError(
                f"channel_identity={cfg.channel_identity!r} is not a mode",
                f"use one of {CHANNEL_IDENTITY_MODES}",
            )
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PlanePatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        # fixed sin-cos positions with a learned gain: starts small (like a learned position
        # embedding initialised at std 0.02) so image content, not position, dominates at init
        self.pos_gain = nn.Parameter(torch.tensor(cfg.pos_gain_init))
        n_ids = {"vocab": cfg.vocab_size, "position": cfg.max_channels, "none": 0}
        self.channel_embed = (
            nn.Embedding(n_ids[cfg.channel_identity], cfg.embed_dim)
            if cfg.channel_identity != "none" else None
        )
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, r, cfg.layerscale) for r in rates
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self._pos_cache: dict[tuple[int, int, str], torch.Tensor] = {}
        self.apply(init_vit_weights)
        trunc_normal_(self.cls_token)
        if self.channel_embed is not None:
            trunc_normal_(self.channel_embed.weight)

    def config_dict(self) -> dict[str, object]:
        return asdict(self.cfg)

    # ------------------------------------------------------------------ input stage
    def check_batch(self, batch: PackedBatch) -> None:
        p = self.cfg.patch_size
        if not torch.is_floating_point(batch.planes):
            raise BadInputError(
                f"planes have dtype {batch.planes.dtype}; the model takes floating point",
                "normalise images to float32 first (biofm.data normalisation)",
            )
        h, w = batch.image_size
        if h < p or w < p:
            raise BadInputError(
                f"images of {h}x{w} px are smaller than one {p}x{p} patch",
                f"resize or tile images to at least {p}x{p} px (biofm embed does this)",
            )
        if h % p or w % p:
            raise BadInputError(
                f"image size {h}x{w} is not a multiple of the patch size {p}",
                f"crop or resize to a multiple of {p} px",
            )
        if self.cfg.channel_identity == "vocab":
            top = int(batch.channel_ids.max())
            if top >= self.cfg.vocab_size or int(batch.channel_ids.min()) < 0:
                raise BadInputError(
                    f"channel id {top} is outside this model's vocabulary of "
                    f"{self.cfg.vocab_size}",
                    "map channel names with the model's ChannelVocab (unknown names -> 0)",
                )
        if self.cfg.channel_identity == "position" and int(batch.counts.max()) > \
                self.cfg.max_channels:
            raise BadInputError(
                f"an image has {int(batch.counts.max())} channels; this model supports "
                f"{self.cfg.max_channels} with channel_identity='position'",
                "use channel_identity='vocab' or 'none', or fewer channels",
            )

    def _pos(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(h, w, self.embed_dim, device)
        return self._pos_cache[key]

    def _slot_index(self, batch: PackedBatch) -> torch.Tensor:
        """(P,) position of each plane inside its image (0..C_i-1)."""
        starts = torch.repeat_interleave(batch.offsets[:-1], batch.counts)
        return torch.arange(batch.planes.shape[0], device=starts.device) - starts

    def embed_planes(self, batch: PackedBatch) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens of every plane with position and channel identity added: (P, N, D)."""
        self.check_batch(batch)
        tok = self.patch_embed(batch.planes)  # (P, N, D)
        h, w = (s // self.cfg.patch_size for s in batch.image_size)
        tok = tok + self.pos_gain * self._pos(h, w, tok.device).to(tok.dtype)
        if self.channel_embed is not None:
            ids = batch.channel_ids if self.cfg.channel_identity == "vocab" \
                else self._slot_index(batch)
            tok = tok + self.channel_embed(ids)[:, None, :]  # (P, 1, D)
        return tok, (h, w)

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
        depth = len(self.blocks)
        wanted = list(range(depth)) if blocks is None else [b % depth for b in blocks]
        return self._run(batch, collect=wanted)[1]
