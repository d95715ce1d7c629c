"""The Encoder contract every registered model follows, and the input checks they share.

An encoder maps a :class:`~biofm.core.batch.PackedBatch` (any number, order and type of channels
per image) to one embedding per image:

* ``forward(batch) -> (B, D)``;
* ``forward_tokens(batch) -> TokenOutput`` dense features: per plane ``(P, N, D)`` for models
  that keep channels apart (BioViT, bag-of-channels) or per image ``(B, N, D)`` for models that
  fuse channels early (BioResNet); ``TokenOutput.per_plane`` says which;
* ``forward_intermediates(batch, blocks) -> {block: (B, D)}`` pooled features of chosen blocks
  (negative indices count from the end); ``num_blocks`` says how many there are;
* ``embed_dim`` and ``card()``: the architecture description that travels with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError


@dataclass
class TokenOutput:
    """``cls`` (B, D) pooled image embedding; ``patches`` dense features, (P, N, D) aligned with
    the batch's planes when ``per_plane`` else (B, N, D) per image; ``grid`` (h, w) of N."""

    cls: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]
    per_plane: bool = True


class Encoder(nn.Module):
    """Base class of every registered encoder (see the module docstring for the contract)."""

    embed_dim: int
    #: the smallest image side the model accepts and the multiple sides must be (0: any)
    min_size: int = 1
    size_multiple: int = 1
    #: most channels per image the model takes (None: no limit)
    max_channels: int | None = None
    #: whether the model reads channel ids (vocab identity) from the batch
    uses_channel_ids: bool = False
    vocab_size: int = 0
    #: permuting an image's channels together with their ids leaves its embedding unchanged
    channel_order_invariant: bool = True

    @property
    def num_blocks(self) -> int:
        raise NotImplementedError

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        raise NotImplementedError

    def forward_tokens(self, batch: PackedBatch) -> TokenOutput:
        raise NotImplementedError

    def forward_intermediates(
        self, batch: PackedBatch, blocks: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return {}

    def compiled_regions(self) -> list[nn.Module]:
        """The repeated sub-modules worth compiling (transformer blocks, residual stages)."""
        return [self]

    def compile_regions(self, **kwargs: Any) -> Encoder:
        """``torch.compile`` each region in place (regional compilation): the channel
        grouping and packing stay eager Python, the dense per-region maths is fused.
        ``kwargs`` go to ``torch.compile`` (e.g. ``mode="max-autotune"``). Returns self."""
        for region in self.compiled_regions():
            region.compile(**kwargs)
        return self

    def card(self) -> dict[str, Any]:
        """Architecture description saved next to the weights (``encoder.json``)."""
        from biofm.core.channels import DEFAULT_VOCAB

        return {
            "model_name": getattr(self, "model_name", None),
            "model_kwargs": dict(getattr(self, "model_kwargs", {})),
            "architecture": type(self).__name__,
            "config": self.config_dict(),
            "embed_dim": int(self.embed_dim),
            "num_blocks": self.num_blocks,
            "num_params": sum(p.numel() for p in self.parameters()),
            "input": {"min_size": self.min_size, "size_multiple": self.size_multiple,
                      "max_channels": self.max_channels,
                      "channel_order_invariant": self.channel_order_invariant,
                      "channel_ids": "vocab" if self.uses_channel_ids else "ignored"},
            "channel_vocab": list(DEFAULT_VOCAB.names) if self.uses_channel_ids else None,
        }

    def resolve_blocks(self, blocks: Sequence[int] | None) -> list[int]:
        """Block indices in 0..num_blocks-1 (negative count from the end); errors name the range."""
        n = self.num_blocks
        if blocks is None:
            return list(range(n))
        out = []
        for b in blocks:
            if not -n <= int(b) < n:
                raise BadInputError(f"block {b} does not exist; the model has {n} blocks",
                                    f"use indices in -{n}..{n - 1}")
            out.append(int(b) % n)
        return out

    def check_batch(self, batch: PackedBatch) -> None:
        """Errors that name the fix for inputs no encoder can take."""
        check_packed_batch(batch, name=type(self).__name__, min_size=self.min_size,
                           multiple=self.size_multiple, max_channels=self.max_channels,
                           vocab_size=self.vocab_size if self.uses_channel_ids else None)


def check_packed_batch(batch: PackedBatch, *, name: str, min_size: int = 1, multiple: int = 1,
                       max_channels: int | None = None, vocab_size: int | None = None) -> None:
    """Shared input checks: dtype, shape, channel counts, image size, channel ids."""
    if not torch.is_floating_point(batch.planes):
        raise BadInputError(
            f"planes have dtype {batch.planes.dtype}; {name} takes floating point",
            "normalise images to float32 first (biofm.data.normalize) or call .float()",
        )
    if batch.planes.ndim != 3:
        raise BadInputError(f"planes have shape {tuple(batch.planes.shape)}; expected (P, H, W)",
                            "build batches with PackedBatch.from_images")
    if batch.num_images == 0 or int(batch.counts.min()) < 1:
        raise BadInputError(
            "an image in the batch has 0 channels",
            "drop images without channels before packing (every image needs 1 or more)",
        )
    if max_channels is not None and int(batch.counts.max()) > max_channels:
        raise BadInputError(
            f"an image has {int(batch.counts.max())} channels; {name} takes at most "
            f"{max_channels}",
            "select at most that many channels, or use a variant without a channel limit",
        )
    h, w = batch.image_size
    if h < min_size or w < min_size:
        raise BadInputError(
            f"images of {h}x{w} px are smaller than {name}'s minimum of {min_size}x{min_size}",
            f"resize or tile images to at least {min_size}x{min_size} px (biofm embed does "
            "this)",
        )
    if multiple > 1 and (h % multiple or w % multiple):
        raise BadInputError(
            f"image size {h}x{w} is not a multiple of {multiple} ({name}'s patch size)",
            f"crop or resize to a multiple of {multiple} px",
        )
    if vocab_size is not None:
        lo, hi = int(batch.channel_ids.min()), int(batch.channel_ids.max())
        if lo < 0 or hi >= vocab_size:
            raise BadInputError(
                f"channel id {hi if hi >= vocab_size else lo} is outside this model's "
                f"vocabulary of {vocab_size}",
                "map channel names with biofm.core.channels.DEFAULT_VOCAB (unknown names -> 0)",
            )
