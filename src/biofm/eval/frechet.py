"""Fréchet distance, KID and FD∞ between two sets of features (any encoder, any D).

* :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between Gaussians fitted to
  the two sets, ``‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1Σ2)^{1/2}`` (FID: Heusel et al. 2017,
  "GANs trained by a two time-scale update rule converge to a local Nash equilibrium").
  ``tr (Σ1Σ2)^{1/2}`` is computed from symmetric eigendecompositions only: with ``S1`` the PSD
  square root of Σ1, ``Σ1Σ2`` is similar to the PSD matrix ``S1 Σ2 S1``, so the trace is
  ``Σ sqrt(max(λ, 0))`` over its eigenvalues ``λ`` (real, stable; no complex ``sqrtm``).
* :func:`kid`: kernel distance (KID: Bińkowski et al. 2018, "Demystifying MMD GANs"), the
  unbiased MMD² with the cubic polynomial kernel ``(x·y/D + 1)³``, averaged over subsets.
* :func:`fd_infinity`: FD extrapolated to infinitely many samples (FD∞: Chong & Forsyth 2020,
  "Effectively unbiased FID and Inception score and where to find them"): FD on random
  subsets of 15 sizes, a straight line fitted against 1/N, its intercept.
* :func:`conditional_fd`: FD per condition (perturbation, compound) and their mean, with a
  bootstrap percentile interval.

All statistics are float64. The streaming statistics live in :mod:`biofm.eval.frechet_stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from biofm.core.errors import BadInputError
from biofm.eval.frechet_stats import (
    FeatureStats,
    check_compatible,
    fingerprint,
    load_stats,
    save_stats,
)

__all__ = [
    "FeatureStats",
    "check_compatible",
    "conditional_fd",
    "fd_from_stats",
    "fd_infinity",
    "fingerprint",
    "frechet_distance",
    "kid",
    "load_stats",
    "save_stats",
    "sqrtm_psd",
]


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root of a symmetric matrix via ``eigh`` (negative eigenvalues,
    from rounding, are clamped to 0)."""
    lam, vec = np.linalg.eigh((a + a.T) / 2)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr (Σ1 Σ2)^{1/2}`` for PSD Σ1, Σ2 as ``Σ sqrt(max(λ, 0))``, λ = eigvalsh(S1 Σ2 S1)."""
    r = sqrtm_psd(s1)
    m = r @ s2 @ r
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    s1: np.ndarray,
    mu2: np.ndarray,
    s2: np.ndarray,
    n1: int | None = None,
    n2: int | None = None,
) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2) (Heusel et al. 2017).

    ``n1``/``n2`` (sample counts) only serve the warning that a covariance estimated from
    ``n <= D`` samples is rank-deficient (the FD is then dominated by estimation bias).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise BadInputError(
            f"shapes mu1 {mu1.shape}, s1 {s1.shape}, mu2 {mu2.shape}, s2 {s2.shape} differ",
            "compare statistics of features with one dimension D: mu (D,), sigma (D, D)",
        )
    for n in (n1, n2):
        if n is not None and n <= d:
            warnings.warn(
                f"covariance from {n} samples of {d}-d features is rank-deficient; the FD is "
                f"dominated by sample-size bias (use many more than {d} samples, or report "
                "FD-infinity / KID)",
                RuntimeWarning,
                stacklevel=2,
            )
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(fd, 0.0)


def fd_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FD between two accumulated statistics (warns when either has n <= D)."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, a.n, b.n)


def _fd_features(x: np.ndarray, y: np.ndarray) -> float:
    a, b = FeatureStats.from_features(x), FeatureStats.from_features(y)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def _pair(f1: Any, f2: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise BadInputError(
            f"feature arrays have shapes {x.shape} and {y.shape}",
            "pass two (N, D) arrays with the same D",
        )
    return x, y


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(
    f1: Any, f2: Any, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) over ``n_subsets`` subsets of the unbiased MMD² with the kernel
    ``(x·y/D + 1)³`` (KID, Bińkowski et al. 2018); each subset draws ``subset_size`` rows
    of each set without replacement."""
    x, y = _pair(f1, f2)
    m = int(subset_size)
    n_min = min(len(x), len(y))
    if m > n_min:
        raise BadInputError(
            f"KID subset size {m} is larger than the smaller set ({n_min} samples)",
            f"pass subset_size <= {n_min} (--kid-subset-size), or use more images",
        )
    if m < 2 or n_subsets < 1:
        raise BadInputError(
            f"subset_size={m}, n_subsets={n_subsets}", "use subset_size >= 2 and n_subsets >= 1"
        )
    rng = np.random.default_rng(seed)
    vals = np.empty(n_subsets)
    for k in range(n_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals[k] = within - 2.0 * kxy.mean()
    return float(vals.mean()), float(vals.std())


def fd_infinity(f1: Any, f2: Any, num_points: int = 15, seed: int = 0) -> dict[str, Any]:
    """FD∞ (Chong & Forsyth 2020): FD of random subsets of ``num_points`` sizes from
    ``min(5000, n/10)`` (at least 2) to ``n`` (the smaller set), a least-squares line of FD
    against 1/N, and its intercept (the FD of infinitely many samples).

    Returns ``{"intercept", "slope", "points": [(N, FD), ...]}``.
    """
    x, y = _pair(f1, f2)
    n = min(len(x), len(y))
    if n < 4 or num_points < 2:
        raise BadInputError(
            f"FD-infinity with {n} samples and {num_points} points",
            "use at least 4 samples per set and num_points >= 2",
        )
    lo = max(int(min(5000, n / 10)), 2)
    sizes = np.unique(np.linspace(lo, n, num_points).astype(int))
    if len(sizes) < 2:
        raise BadInputError(
            f"only {len(sizes)} distinct subset size(s) between {lo} and {n}", "use more samples"
        )
    if lo <= x.shape[1]:
        warnings.warn(
            f"FD-infinity uses subsets of {lo} samples of {x.shape[1]}-d features "
            "(rank-deficient covariances); the fit is less reliable",
            RuntimeWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    points = []
    for size in sizes:
        a = x[rng.permutation(len(x))[:size]]
        b = y[rng.permutation(len(y))[:size]]
        points.append((int(size), _fd_features(a, b)))
    inv = np.array([1.0 / s for s, _ in points])
    fds = np.array([v for _, v in points])
    slope, intercept = np.polyfit(inv, fds, 1)
    return {"intercept": float(intercept), "slope": float(slope), "points": points}


def conditional_fd(
    real_feats: Any,
    real_conditions: Sequence[Any] | np.ndarray,
    fake_feats: Any,
    fake_conditions: Sequence[Any] | np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """FD per condition and the mean over conditions, with a bootstrap percentile interval.

    Conditions present in both sets with at least 2 samples on each side are used (others
    are listed under ``skipped``). Each bootstrap replicate resamples the conditions with
    replacement and averages their FDs: the interval describes the mean over conditions.
    (Resampling feature rows instead would duplicate rows, which biases FD upwards.)
    With a single condition the interval is that condition's FD.
    """
    x, y = _pair(real_feats, fake_feats)
    rc, fc = np.asarray(real_conditions, dtype=object), np.asarray(fake_conditions, dtype=object)
    if len(rc) != len(x) or len(fc) != len(y):
        raise BadInputError(
            f"{len(rc)} real and {len(fc)} fake conditions for {len(x)} and {len(y)} rows",
            "give one condition per feature row",
        )
    used: list[Any] = []
    skipped: list[str] = []
    for c in sorted(set(rc.tolist()) | set(fc.tolist()), key=str):
        nr, nf = int((rc == c).sum()), int((fc == c).sum())
        if nr >= 2 and nf >= 2:
            used.append(c)
        else:
            skipped.append(f"{c} (real {nr}, fake {nf})")
    if not used:
        raise BadInputError(
            "no condition has at least 2 real and 2 fake samples",
            "check that the condition column holds the same values in both sets",
        )
    idx = {c: (np.flatnonzero(rc == c), np.flatnonzero(fc == c)) for c in used}
    per = {str(c): _fd_features(x[idx[c][0]], y[idx[c][1]]) for c in used}
    rng = np.random.default_rng(seed)
    values = np.array(list(per.values()))
    boots = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    alpha = (1.0 - level) / 2
    ci = (
        [float(v) for v in np.quantile(boots, [alpha, 1.0 - alpha])]
        if n_boot > 0
        else [float("nan"), float("nan")]
    )
    return {
        "per_condition": per,
        "counts": {str(c): [len(idx[c][0]), len(idx[c][1])] for c in used},
        "mean": float(np.mean(list(per.values()))),
        "ci": ci,
        "level": level,
        "n_boot": int(n_boot),
        "skipped": skipped,
    }
