"""Per-channel robust intensity scaling of a (C, H, W) image to float32.

Each channel is mapped by ``(x - lo) / (hi - lo)`` with ``lo``/``hi`` low/high percentiles
estimated on a strided subsample (fast on 1080² uint16 fields), then clipped to a sane range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biofm.core.errors import BadSampleError, ConfigError
from biofm.core.sample import Sample


@dataclass(frozen=True)
class NormalizeConfig:
    """Percentiles (in %), output clip range, and pixels per channel used for the estimate."""

    low: float = 1.0
    high: float = 99.8
    clip: tuple[float, float] = (-0.5, 3.0)
    max_samples: int = 65536

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ConfigError(
                f"percentiles low={self.low}, high={self.high} are not 0 <= low < high <= 100",
                "use e.g. low=1.0, high=99.8",
            )
        if not self.clip[0] < self.clip[1]:
            raise ConfigError(f"clip={self.clip} is empty", "use e.g. clip=(-0.5, 3.0)")
        if self.max_samples < 1:
            raise ConfigError(f"max_samples={self.max_samples} < 1", "use e.g. 65536")


def channel_ranges(
    pixels: np.ndarray, config: NormalizeConfig = NormalizeConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi), each (C,) float64. ``hi == lo`` marks a constant channel.

    Percentiles come from a regular strided grid of about ``max_samples`` pixels. When a channel's
    percentiles coincide (sparse signal, e.g. a few bright foci) its full min/max is used instead.
    """
    c, h, w = pixels.shape
    stride = max(1, int(np.sqrt(h * w / config.max_samples)))
    sub = pixels[:, ::stride, ::stride].reshape(c, -1)
    lo, hi = np.percentile(sub, [config.low, config.high], axis=1)
    flat = np.flatnonzero(hi <= lo)
    for i in flat:
        lo[i] = float(pixels[i].min())
        hi[i] = float(pixels[i].max())
    return lo.astype(np.float64), hi.astype(np.float64)


def normalize_pixels(
    pixels: np.ndarray,
    config: NormalizeConfig = NormalizeConfig(),
    where: str | None = None,
) -> np.ndarray:
    """(C, H, W) any numeric dtype -> (C, H, W) float32 scaled per channel and clipped.

    A constant channel becomes zeros; an image whose every channel is constant raises
    ``BadSampleError`` (it carries no signal).
    """
    lo, hi = channel_ranges(pixels, config)
    span = hi - lo
    constant = span <= 0
    if constant.all():
        raise BadSampleError(
            "image carries no signal: every channel is constant",
            "check the file (blank or failed acquisition) or exclude it from the manifest",
            where,
        )
    out = pixels.astype(np.float32, copy=True)
    scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, span)).astype(np.float32)
    out -= lo.astype(np.float32)[:, None, None]
    out *= scale[:, None, None]
    np.clip(out, config.clip[0], config.clip[1], out=out)
    return out


def normalize_sample(sample: Sample, config: NormalizeConfig = NormalizeConfig()) -> np.ndarray:
    """``normalize_pixels`` of a Sample; errors name the sample's id or path."""
    where = str(sample.meta.get("id") or sample.meta.get("path") or "") or None
    return normalize_pixels(sample.pixels, config, where)
