"""Crops from a normalised field: nucleus-centred when a DNA channel exists, else random tiles.

Nuclei are found once per field (Otsu threshold + connected components on the smoothed DNA
channel); each crop is centred on a random nucleus centroid and clamped to the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadSampleError
from biofm.data.rng import coin, randint


def find_dna_channel(names: Sequence[str], vocab: ChannelVocab = DEFAULT_VOCAB) -> int | None:
    """Index of the first channel whose canonical stain is DNA, or None."""
    for i, name in enumerate(names):
        if vocab.canonical(name) == "DNA":
            return i
    return None


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float | None:
    """Otsu's threshold of the values (any shape), or None when they are all equal."""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return None
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = hist.astype(np.float64) / hist.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)  # weight of the class below each cut
    m0 = np.cumsum(p * centres)
    w1 = 1.0 - w0
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0)
    mt = m0[-1]
    between[valid] = (mt * w0[valid] - m0[valid]) ** 2 / (w0[valid] * w1[valid])
    return float(edges[int(np.argmax(between)) + 1])


def nucleus_labels(
    dna: np.ndarray,
    *,
    sigma: float = 2.0,
    min_area: int = 30,
    max_area_fraction: float = 0.25,
) -> tuple[np.ndarray, int]:
    """(H, W) int labels 1..N of bright blobs in a (H, W) DNA image (0 = background), and N.

    Blobs smaller than ``min_area`` pixels (noise) or larger than ``max_area_fraction`` of the
    field (background above threshold) are dropped.
    """
    smooth = ndimage.gaussian_filter(dna.astype(np.float32, copy=False), sigma)
    thr = otsu_threshold(smooth)
    if thr is None:
        return np.zeros(dna.shape, dtype=np.int64), 0
    labels, n = ndimage.label(smooth > thr)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = np.flatnonzero((areas >= min_area) & (areas <= max_area_fraction * dna.size)) + 1
    relabel = np.zeros(n + 1, dtype=np.int64)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return relabel[labels], len(keep)


def nucleus_centroids(
    dna: np.ndarray,
    *,
    sigma: float = 2.0,
    min_area: int = 30,
    max_area_fraction: float = 0.25,
) -> np.ndarray:
    """(N, 2) float (y, x) centroids of the blobs of `nucleus_labels`; (0, 2) if none."""
    labels, n = nucleus_labels(dna, sigma=sigma, min_area=min_area,
                               max_area_fraction=max_area_fraction)  # fmt: skip
    if n == 0:
        return np.zeros((0, 2))
    cents = ndimage.center_of_mass(np.ones(dna.shape, dtype=np.float32), labels,
                                   np.arange(1, n + 1))  # fmt: skip
    return np.asarray(cents, dtype=np.float64).reshape(-1, 2)


def fit_to_crop(
    pixels: np.ndarray, size: int, *, resize_small: bool = False, where: str | None = None
) -> np.ndarray:
    """Return the (C, H, W) float image unchanged if both sides are >= size; else upsample it
    (bilinear) so its short side equals ``size`` when ``resize_small``, or raise BadSampleError."""
    h, w = pixels.shape[-2:]
    if h >= size and w >= size:
        return pixels
    if not resize_small:
        raise BadSampleError(
            f"image is {h}x{w} pixels, smaller than the crop size {size}",
            f"use a crop size <= {min(h, w)}, or pass resize_small=True to upsample small "
            "images so their short side equals the crop size",
            where,
        )
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False)[0].numpy()


def centred_origin(cy: float, cx: float, h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left of a size x size box centred on (cy, cx), clamped inside an h x w field."""
    y0 = min(max(round(cy) - size // 2, 0), h - size)
    x0 = min(max(round(cx) - size // 2, 0), w - size)
    return int(y0), int(x0)


@dataclass
class Crop:
    """A crop: ``pixels`` (C, S, S) float32, its top-left in the field, the nucleus it is
    centred on ((y, x) in field coordinates) or None for a random tile."""

    pixels: np.ndarray
    origin: tuple[int, int]
    centre: tuple[float, float] | None


@dataclass
class PreparedField:
    """A normalised field ready for cropping: pixels (C, H, W) float32, names, centroids."""

    pixels: np.ndarray
    channels: list[str]
    centroids: np.ndarray
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        pixels: np.ndarray,
        channels: list[str],
        crop_size: int | None,
        *,
        resize_small: bool = False,
        vocab: ChannelVocab = DEFAULT_VOCAB,
        id: str = "",
        meta: dict[str, Any] | None = None,
    ) -> PreparedField:
        """Fit a normalised field to the crop size and find its nuclei (if it has DNA and
        will be cropped: whole fields, as embedded, need none)."""
        if crop_size is not None:
            pixels = fit_to_crop(pixels, crop_size, resize_small=resize_small, where=id or None)
        dna = find_dna_channel(channels, vocab)
        cents = (np.zeros((0, 2)) if dna is None or crop_size is None
                 else nucleus_centroids(pixels[dna]))  # fmt: skip
        return cls(pixels, list(channels), cents, id, dict(meta or {}))

    def crop(self, size: int, gen: torch.Generator, nucleus_fraction: float = 1.0) -> Crop:
        """One crop: centred on a random nucleus with probability ``nucleus_fraction`` (when
        the field has nuclei), else a uniformly random tile."""
        h, w = self.pixels.shape[-2:]
        centre: tuple[float, float] | None = None
        if len(self.centroids) and coin(gen, nucleus_fraction):
            cy, cx = self.centroids[randint(gen, len(self.centroids))]
            centre = (float(cy), float(cx))
            y0, x0 = centred_origin(cy, cx, h, w, size)
        else:
            y0, x0 = randint(gen, h - size + 1), randint(gen, w - size + 1)
        tile = self.pixels[:, y0:y0 + size, x0:x0 + size]
        return Crop(np.ascontiguousarray(tile), (y0, x0), centre)
