"""The ``Sample``: one multichannel image (a field, a tile or a crop) with its channel names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biofm.core.errors import BadSampleError

UNKNOWN_CHANNEL = "unknown"


@dataclass
class Sample:
    """One image: ``pixels`` (C, H, W), one free-text name per channel, metadata.

    The dtype of ``pixels`` is kept as acquired (uint8/uint16/float) until normalisation.
    Construction validates shape, names and finiteness; errors name the fix.
    """

    pixels: np.ndarray
    channels: list[str]
    pixel_size_um: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = str(self.meta.get("id") or self.meta.get("path") or "") or None
        px = np.asarray(self.pixels)
        if px.ndim == 2:
            raise BadSampleError(
                f"pixels have shape {px.shape} (H, W) without a channel axis",
                "pass pixels[None] for a single-channel image so the shape is (C, H, W)",
                where,
            )
        if px.ndim != 3:
            raise BadSampleError(
                f"pixels have shape {px.shape}; a Sample holds (C, H, W)",
                "move channels first and drop singleton Z/T axes, e.g. arr.squeeze()",
                where,
            )
        if px.shape[0] < 1 or px.shape[1] < 1 or px.shape[2] < 1:
            raise BadSampleError(
                f"pixels have an empty axis: shape {px.shape}",
                "check the file: it holds no image data",
                where,
            )
        if not (np.issubdtype(px.dtype, np.integer) or np.issubdtype(px.dtype, np.floating)
                or px.dtype == np.bool_):
            raise BadSampleError(
                f"pixels have dtype {px.dtype}, which is not numeric",
                "convert to an integer or float array",
                where,
            )
        if self.channels is None:
            self.channels = [UNKNOWN_CHANNEL] * px.shape[0]
        self.channels = [str(c) for c in self.channels]
        if len(self.channels) != px.shape[0]:
            raise BadSampleError(
                f"{len(self.channels)} channel names {self.channels} for {px.shape[0]} channels",
                "give exactly one name per channel (use 'unknown' for unnamed channels)",
                where,
            )
        if np.issubdtype(px.dtype, np.floating) and not np.isfinite(px).all():
            bad = int((~np.isfinite(px)).sum())
            raise BadSampleError(
                f"pixels contain {bad} NaN/inf values",
                "repair or exclude the image (e.g. np.nan_to_num for known masked regions)",
                where,
            )
        if px.dtype == np.bool_:
            px = px.astype(np.uint8)
        self.pixels = px
        if self.pixel_size_um is not None and not self.pixel_size_um > 0:
            raise BadSampleError(
                f"pixel_size_um={self.pixel_size_um} is not positive",
                "give the physical pixel size in micrometres, or None when unknown",
                where,
            )

    @property
    def num_channels(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.pixels.shape
        return int(c), int(h), int(w)
