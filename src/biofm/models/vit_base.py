"""What BioViT and the bag-of-channels ViT share: the plane tokeniser and the block stack.

Every (image, channel) plane is cut into patches by one shared ``Conv2d(1 -> D)``; tokens get a
fixed 2-D sin-cos position times a learned gain (started small, like a learned position
embedding at std 0.02, so image content dominates at init) and, per plane, a channel-identity
embedding: the plane's stain id (``vocab``), its slot in the image (``position``) or none.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.models.base import Encoder
from biofm.nn.embed import PlanePatchEmbed, init_vit_weights, sincos_2d, trunc_normal_
from biofm.nn.layers import Block


class PlaneViTEncoder(Encoder):
    """Base of the ViT encoders: builds ``patch_embed``, ``cls_token``, ``pos_gain``,
    ``channel_embed``, ``blocks`` and ``norm`` from a config with the usual ViT fields."""

    identity_modes: tuple[str, ...] = ("vocab", "position", "none")

    def _build_trunk(self, cfg: Any) -> None:
        if cfg.channel_identity not in self.identity_modes:
            raise BadInputError(
                f"channel_identity={cfg.channel_identity!r} is not a mode of "
                f"{type(self).__name__}", f"use one of {self.identity_modes}")
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.min_size = self.size_multiple = cfg.patch_size
        self.uses_channel_ids = cfg.channel_identity == "vocab"
        self.vocab_size = cfg.vocab_size
        self.channel_order_invariant = cfg.channel_identity != "position"
        if cfg.channel_identity == "position":
            self.max_channels = cfg.max_channels
        self.patch_embed = PlanePatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_gain = nn.Parameter(torch.full((1,), float(cfg.pos_gain_init)))
        n_ids = {"vocab": cfg.vocab_size, "none": 0,
                 "position": getattr(cfg, "max_channels", 0)}[cfg.channel_identity]
        self.channel_embed = (nn.Embedding(n_ids, cfg.embed_dim)
                              if cfg.channel_identity != "none" else None)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, r, cfg.layerscale) for r in rates
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self._pos_cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        """Weights saved when ``pos_gain`` was a 0-d tensor load into its (1,) shape (the
        shape sharded training needs)."""
        key = prefix + "pos_gain"
        if key in state_dict and state_dict[key].ndim == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_trunk(self) -> None:
        self.apply(init_vit_weights)
        trunc_normal_(self.cls_token)
        if self.channel_embed is not None:
            trunc_normal_(self.channel_embed.weight)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def compiled_regions(self) -> list[nn.Module]:
        return list(self.blocks)

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
            ids = batch.channel_ids if self.uses_channel_ids else self._slot_index(batch)
            tok = tok + self.channel_embed(ids.to(tok.device))[:, None, :]  # (P, 1, D)
        return tok, (h, w)
