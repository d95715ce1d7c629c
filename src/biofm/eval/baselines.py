"""Baselines reported beside every learned embedding: handcrafted features, pixel PCA, and the
same architecture untrained.

All three are channel-agnostic like the encoders: they take a (C, H, W) image with any number
of channels and return a vector whose length does not depend on C.

- `handcrafted_features`: per channel, intensity statistics (mean, std, percentiles,
  skewness, kurtosis), texture (Haralick-style grey-level co-occurrence statistics: contrast,
  homogeneity, energy, correlation, averaged over 4 directions at distance 1; mean gradient
  magnitude; variance of the Laplacian, a focus measure), and shape of the objects in an Otsu
  foreground (area fraction, object count, mean and spread of object areas, mean
  solidity-like fill ratio). Channel vectors are pooled by mean and max over channels, so
  1-channel and 5-channel images get the same features (Haralick et al., IEEE TSMC 1973).
- `PixelPCA`: each channel resized to a small square, PCA fitted on channel planes, the image
  is the mean and max over its channels of the plane projections.
- `untrained_like`: the encoder's architecture with freshly initialised weights.

Images are scaled per channel with biofm's robust normalisation first (the same as the
encoders see), so intensity features compare images from different instruments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from biofm.core.errors import BadInputError
from biofm.data.crops import otsu_threshold
from biofm.data.normalize import NormalizeConfig, normalize_pixels

_LEVELS = 32
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
INTENSITY = ("mean", "std", "p1", "p25", "p50", "p75", "p99", "skew", "kurtosis")
TEXTURE = ("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
           "gradient", "laplacian_var")  # fmt: skip
SHAPE = ("fg_fraction", "n_objects", "area_mean", "area_cv", "fill_ratio")
CHANNEL_FEATURES = INTENSITY + TEXTURE + SHAPE


def _check_image(pixels: np.ndarray) -> np.ndarray:
    x = np.asarray(pixels)
    if x.ndim != 3 or min(x.shape) < 1:
        raise BadInputError(f"image of shape {x.shape}", "pass (C, H, W) pixels")
    if x.shape[1] < 8 or x.shape[2] < 8:
        raise BadInputError(
            f"image of {x.shape[1]}x{x.shape[2]} pixels is too small for "
            "texture and shape features",
            "use images of at least 8x8",
        )
    return x


def _intensity(p: NDArray[np.float64]) -> list[float]:
    mean, std = float(p.mean()), float(p.std())
    q = np.percentile(p, [1, 25, 50, 75, 99])
    z = (p - mean) / std if std > 0 else np.zeros_like(p)
    return [mean, std, *map(float, q), float((z**3).mean()), float((z**4).mean() - 3.0)]


def _glcm(levels: NDArray[np.intp]) -> list[float]:
    """Co-occurrence statistics averaged over 4 directions (symmetric, normalised)."""
    stats = np.zeros(4)
    i, j = np.meshgrid(np.arange(_LEVELS), np.arange(_LEVELS), indexing="ij")
    h, w = levels.shape
    for dy, dx in _SHIFTS:  # dy >= 0; pixel (y, x) paired with (y + dy, x + dx)
        a = levels[: h - dy, max(0, -dx) : w - max(0, dx)]
        b = levels[dy:, max(0, dx) : w - max(0, -dx)]
        counts = np.bincount((a * _LEVELS + b).ravel(), minlength=_LEVELS * _LEVELS)
        pairs = counts.reshape(_LEVELS, _LEVELS).astype(np.float64)
        pairs = pairs + pairs.T
        m = pairs / max(float(pairs.sum()), 1.0)
        mu_i = (i * m).sum()
        sd = np.sqrt(((i - mu_i) ** 2 * m).sum())
        corr = ((i - mu_i) * (j - mu_i) * m).sum() / (sd * sd) if sd > 0 else 1.0
        stats += [((i - j) ** 2 * m).sum(), (m / (1.0 + np.abs(i - j))).sum(),
                  (m**2).sum(), corr]  # fmt: skip
    return list(map(float, stats / len(_SHIFTS)))


def _shape(p: NDArray[np.float64]) -> list[float]:
    thr = otsu_threshold(p, bins=128)
    if thr is None:  # a constant plane has no objects
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    fg = p > thr
    labels, n = ndimage.label(fg)
    if n == 0:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    boxes = ndimage.find_objects(labels)
    fill = [a / max((s[0].stop - s[0].start) * (s[1].stop - s[1].start), 1)
            for a, s in zip(areas, boxes, strict=True) if s is not None]  # fmt: skip
    return [float(fg.mean()), float(np.log1p(n)), float(np.log1p(areas.mean())),
            float(areas.std() / areas.mean()), float(np.mean(fill))]  # fmt: skip


def channel_features(plane: np.ndarray) -> NDArray[np.float64]:
    """The `CHANNEL_FEATURES` of one normalised (H, W) plane."""
    p = np.asarray(plane, dtype=np.float64)
    lo, hi = np.percentile(p, [0.5, 99.5])
    levels = np.clip(((p - lo) / (hi - lo + 1e-12) * _LEVELS).astype(np.intp), 0, _LEVELS - 1)
    gy, gx = np.gradient(p)
    texture = [*_glcm(levels), float(np.hypot(gy, gx).mean()),
               float(ndimage.laplace(p).var())]  # fmt: skip
    return np.asarray(_intensity(p) + texture + _shape(p), dtype=np.float64)


Ranges = tuple[np.ndarray, np.ndarray] | None


def handcrafted_features(pixels: np.ndarray, normalize: NormalizeConfig | None = None,
                         ranges: Ranges = None) -> NDArray[np.float64]:  # fmt: skip
    """(2 * len(CHANNEL_FEATURES),) features of a (C, H, W) image: mean then max over channels.

    ``ranges``: per-channel (lo, hi) fitted over many images (``NormStats.ranges``) to scale
    by instead of the image's own percentiles."""
    x = _check_image(pixels)
    norm = normalize_pixels(x, normalize or NormalizeConfig(), ranges=ranges)
    per = np.stack([channel_features(c) for c in norm])
    return np.concatenate([per.mean(0), per.max(0)])


def feature_names() -> list[str]:
    return [f"{pool}_{n}" for pool in ("mean", "max") for n in CHANNEL_FEATURES]


def _planes(pixels: np.ndarray, size: int, normalize: NormalizeConfig | None,
            ranges: Ranges = None) -> np.ndarray:  # fmt: skip
    """(C, size*size) normalised planes, resized by area averaging (zoom for small images)."""
    x = _check_image(pixels)
    norm = normalize_pixels(x, normalize or NormalizeConfig(), ranges=ranges).astype(np.float64)
    c, h, w = norm.shape
    out = ndimage.zoom(norm, (1, size / h, size / w), order=1, prefilter=False)
    if out.shape[1:] != (size, size):  # rounding in zoom
        out = out[:, :size, :size]
        out = np.pad(out, ((0, 0), (0, size - out.shape[1]), (0, size - out.shape[2])),
                     mode="edge")  # fmt: skip
    return out.reshape(c, -1)


class PixelPCA:
    """PCA of downsampled channel planes; an image is the mean and max of its planes' scores."""

    def __init__(self, n_components: int = 32, size: int = 32, seed: int = 0,
                 normalize: NormalizeConfig | None = None) -> None:  # fmt: skip
        self.n_components, self.size, self.seed = n_components, size, seed
        self.normalize = normalize
        self.mean_: NDArray[np.float64] | None = None
        self.components_: NDArray[np.float64] | None = None

    def fit(self, images: list[np.ndarray], ranges: list[Ranges] | None = None) -> PixelPCA:
        """Fit on ``images``, each scaled by its ``ranges`` entry (or its own percentiles)."""
        rs = ranges or [None] * len(images)
        planes = np.concatenate([_planes(im, self.size, self.normalize, r)
                                 for im, r in zip(images, rs, strict=True)])  # fmt: skip
        if len(planes) < 2:
            raise BadInputError(f"{len(planes)} channel planes to fit PCA on",
                                "pass at least two images or channels")  # fmt: skip
        self.mean_ = planes.mean(0)
        _, _, vt = np.linalg.svd(planes - self.mean_, full_matrices=False)
        self.components_ = vt[: min(self.n_components, len(vt))]
        return self

    def transform_one(self, pixels: np.ndarray, ranges: Ranges = None) -> NDArray[np.float64]:
        if self.mean_ is None or self.components_ is None:
            raise BadInputError("PixelPCA is not fitted", "call fit(images) first")
        planes = _planes(pixels, self.size, self.normalize, ranges)
        scores = (planes - self.mean_) @ self.components_.T
        return np.concatenate([scores.mean(0), scores.max(0)])

    def transform(self, images: list[np.ndarray], ranges: list[Ranges] | None = None
                  ) -> NDArray[np.float64]:  # fmt: skip
        rs = ranges or [None] * len(images)
        return np.stack([self.transform_one(im, r) for im, r in zip(images, rs, strict=True)])


def untrained_like(model: Any, seed: int = 0) -> Any:
    """A fresh, randomly initialised encoder of ``model``'s architecture (same name and
    kwargs), with the same weights card, in eval mode."""
    import torch

    from biofm.models.registry import create_model

    name = getattr(model, "model_name", None)
    if name is None:
        raise BadInputError(
            "the model does not record its registry name",
            "build it with biofm.create_model or load it with load_encoder",
        )
    torch.manual_seed(seed)
    fresh = create_model(name, **dict(getattr(model, "model_kwargs", {}) or {}))
    fresh.weights_card = dict(getattr(model, "weights_card", {}) or {})  # type: ignore[assignment]
    return fresh.eval()
