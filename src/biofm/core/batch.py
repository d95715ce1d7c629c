"""``PackedBatch``: images with different channel counts packed without padding.

All (image, channel) planes of a batch are stacked along one axis; ``counts`` gives the number
of channels of each image, so image ``i`` owns planes ``offsets[i]:offsets[i+1]``. Every plane of
a batch has the same (H, W). The padded form exists only as a reference for tests/benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from biofm.core.errors import BadInputError


@dataclass
class PackedBatch:
    """``planes`` (P, H, W) float; ``channel_ids`` (P,) long; ``counts`` (B,) long; ``meta``."""

    planes: torch.Tensor
    channel_ids: torch.Tensor
    counts: torch.Tensor
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.planes.ndim != 3:
            raise BadInputError(
                f"planes must be (P, H, W), got shape {tuple(self.planes.shape)}",
                "build batches with PackedBatch.from_images",
            )
        if self.counts.ndim != 1 or self.counts.numel() == 0:
            raise BadInputError("a PackedBatch needs at least one image", "pass 1 or more images")
        if int(self.counts.min()) < 1:
            raise BadInputError(
                "an image in the batch has 0 channels", "drop images without channels"
            )
        total = int(self.counts.sum())
        if total != self.planes.shape[0] or self.channel_ids.shape != (total,):
            raise BadInputError(
                f"counts sum to {total} but there are {self.planes.shape[0]} planes and "
                f"{tuple(self.channel_ids.shape)} channel ids",
                "give one channel id per plane and counts that add up to the number of planes",
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_images(
        cls,
        images: Sequence[torch.Tensor | np.ndarray],
        channel_ids: Sequence[Sequence[int]] | None = None,
        meta: Sequence[dict[str, Any]] | None = None,
    ) -> PackedBatch:
        """Pack images of shape (C_i, H, W) (same H, W; any C_i >= 1)."""
        if len(images) == 0:
            raise BadInputError("no images to pack", "pass at least one (C, H, W) image")
        tensors = [torch.as_tensor(np.asarray(im) if not isinstance(im, torch.Tensor) else im)
                   for im in images]
        hw = tensors[0].shape[-2:]
        for i, t in enumerate(tensors):
            if t.ndim != 3:
                raise BadInputError(
                    f"image {i} has shape {tuple(t.shape)}; expected (C, H, W)",
                    "add a channel axis to single-channel images (img[None])",
                )
            if t.shape[-2:] != hw:
                raise BadInputError(
                    f"image {i} is {tuple(t.shape[-2:])} but image 0 is {tuple(hw)}",
                    "crop or resize images to one size before packing",
                )
        counts = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
        if channel_ids is None:
            ids = torch.zeros(int(counts.sum()), dtype=torch.long)
        else:
            if len(channel_ids) != len(tensors):
                raise BadInputError(
                    f"{len(channel_ids)} channel-id lists for {len(tensors)} images",
                    "give one list of channel ids per image",
                )
            for i, (t, c) in enumerate(zip(tensors, channel_ids, strict=True)):
                if len(c) != t.shape[0]:
                    raise BadInputError(
                        f"image {i} has {t.shape[0]} channels but {len(c)} channel ids",
                        "give one channel id per channel",
                    )
            ids = torch.tensor([int(x) for c in channel_ids for x in c], dtype=torch.long)
        planes = torch.cat([t.float() for t in tensors], dim=0)
        m = [dict(x) for x in meta] if meta is not None else [{} for _ in tensors]
        return cls(planes=planes, channel_ids=ids, counts=counts, meta=m)

    # ------------------------------------------------------------------ views
    @property
    def num_images(self) -> int:
        return int(self.counts.numel())

    @property
    def offsets(self) -> torch.Tensor:
        """(B + 1,) start of each image's planes, then the total."""
        return torch.cat([self.counts.new_zeros(1), torch.cumsum(self.counts, 0)])

    @property
    def image_index(self) -> torch.Tensor:
        """(P,) index of the image each plane belongs to."""
        return torch.repeat_interleave(
            torch.arange(self.num_images, device=self.counts.device), self.counts
        )

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.planes.shape[-2]), int(self.planes.shape[-1])

    def images(self) -> list[torch.Tensor]:
        """The images as a list of (C_i, H, W) tensors."""
        return list(torch.split(self.planes, self.counts.tolist(), dim=0))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        return PackedBatch(
            planes=self.planes.to(device, non_blocking=non_blocking),
            channel_ids=self.channel_ids.to(device, non_blocking=non_blocking),
            counts=self.counts.to(device, non_blocking=non_blocking),
            meta=self.meta,
        )

    def pin_memory(self) -> PackedBatch:
        return PackedBatch(
            self.planes.pin_memory(), self.channel_ids.pin_memory(), self.counts.pin_memory(),
            self.meta,
        )

    def padded(
        self, max_channels: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reference padded form: (B, Cmax, H, W) planes, (B, Cmax) ids, (B, Cmax) bool mask."""
        cmax = int(self.counts.max()) if max_channels is None else max_channels
        if cmax < int(self.counts.max()):
            raise BadInputError(
                f"max_channels={cmax} is below the batch's largest channel count "
                f"{int(self.counts.max())}",
                "raise max_channels",
            )
        b = self.num_images
        h, w = self.image_size
        x = self.planes.new_zeros(b, cmax, h, w)
        ids = self.channel_ids.new_zeros(b, cmax)
        mask = torch.zeros(b, cmax, dtype=torch.bool, device=self.planes.device)
        for i, (start, n) in enumerate(zip(self.offsets[:-1].tolist(), self.counts.tolist(),
                                           strict=True)):
            x[i, :n] = self.planes[start:start + n]
            ids[i, :n] = self.channel_ids[start:start + n]
            mask[i, :n] = True
        return x, ids, mask
