"""Streaming feature statistics for Fréchet distances, their files and their fingerprints.

:class:`FeatureStats` accumulates the count, mean and centred second moment ``M2`` of feature
vectors in float64, one batch at a time, and merges partial statistics exactly (Chan, Golub &
LeVeque's pairwise update), so statistics computed on several ranks or shards combine into
those of the whole set. The covariance uses ``ddof=1`` (as ``numpy.cov``).

Reference statistics are saved as ``.npz`` (``mu``, ``sigma``, ``n``, ``dims``, ``m2`` and a
JSON metadata string). The metadata carries a ``fingerprint``: the sha256 of the model's hash
and the preprocessing (channels, scaling, crop size, ...), so that statistics made with another
encoder or another preprocessing are refused by :func:`check_compatible`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from biofm.core import dist
from biofm.core.errors import BadInputError, ConfigError

STATS_FORMAT = "biofm-fid-stats/1"


def _as_features(feats: Any, dims: int | None, where: str = "features") -> np.ndarray:
    x = np.asarray(feats.detach().cpu() if hasattr(feats, "detach") else feats)
    if x.ndim != 2:
        raise BadInputError(
            f"{where} have shape {x.shape}; expected (N, D)", "pass one feature vector per row"
        )
    if dims is not None and x.shape[1] != dims:
        raise BadInputError(
            f"{where} have {x.shape[1]} dimensions, the statistics {dims}",
            "use features of one encoder and one layer throughout",
        )
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise BadInputError(
            f"{where} contain NaN or infinite values",
            "check the encoder output (e.g. run it in float32, not float16)",
        )
    return x


class FeatureStats:
    """Float64 streaming (n, mean, M2) of D-dimensional features.

    ``update`` adds a batch, ``merge`` adds another ``FeatureStats`` (Chan et al. 1979),
    ``all_reduce`` merges the statistics of every distributed rank (a no-op on one process).
    """

    def __init__(self, dims: int) -> None:
        if dims < 1:
            raise BadInputError(f"dims={dims}", "give the feature dimension (>= 1)")
        self.dims = int(dims)
        self.n = 0
        self._mean = np.zeros(self.dims, dtype=np.float64)
        self.m2 = np.zeros((self.dims, self.dims), dtype=np.float64)

    @classmethod
    def from_features(cls, feats: Any) -> FeatureStats:
        """Statistics of an (N, D) array in one pass."""
        x = _as_features(feats, None)
        out = cls(x.shape[1])
        out.update(x)
        return out

    @classmethod
    def from_moments(cls, n: int, mean: np.ndarray, m2: np.ndarray) -> FeatureStats:
        out = cls(int(np.asarray(mean).shape[0]))
        out.n = int(n)
        out._mean = np.asarray(mean, dtype=np.float64).copy()
        out.m2 = np.asarray(m2, dtype=np.float64).copy()
        return out

    def update(self, feats: Any) -> FeatureStats:
        """Add an (N, D) batch (numpy or torch, any float dtype); returns ``self``."""
        x = _as_features(feats, self.dims)
        if x.shape[0] == 0:
            return self
        mean = x.mean(axis=0)
        xc = x - mean
        return self._merge_moments(x.shape[0], mean, xc.T @ xc)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add the statistics of another set of features (exact, order-independent up to
        rounding); returns ``self``."""
        if other.dims != self.dims:
            raise BadInputError(
                f"cannot merge {other.dims}-d statistics into {self.dims}-d",
                "merge statistics of one encoder and layer only",
            )
        return self._merge_moments(other.n, other._mean, other.m2)

    def _merge_moments(self, nb: int, mean_b: np.ndarray, m2_b: np.ndarray) -> FeatureStats:
        if nb == 0:
            return self
        na = self.n
        n = na + nb
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (na * nb / n)
        self.n = n
        return self

    def all_reduce(self) -> FeatureStats:
        """Replace the statistics by those of all ranks together (same on every rank).

        Each rank's (n, mean, M2) is gathered and merged in rank order, which equals the
        statistics of the concatenated features up to float64 rounding.
        """
        if not dist.is_dist():
            return self
        parts = dist.all_gather_object((self.n, self._mean, self.m2))
        total = FeatureStats(self.dims)
        for n, mean, m2 in parts:
            total._merge_moments(int(n), np.asarray(mean), np.asarray(m2))
        self.n, self._mean, self.m2 = total.n, total._mean, total.m2
        return self

    @property
    def mean(self) -> np.ndarray:
        """(D,) float64 mean."""
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """(D, D) float64 unbiased covariance (``ddof=1``, as ``numpy.cov``)."""
        if self.n < 2:
            raise BadInputError(
                f"covariance of {self.n} feature vector(s)",
                "accumulate at least 2 (and preferably more than D) samples",
            )
        c = self.m2 / (self.n - 1)
        return (c + c.T) / 2

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write ``.npz`` with ``mu``, ``sigma``, ``n``, ``dims``, ``m2`` and ``meta`` (JSON)."""
        return save_stats(path, self, meta or {})

    @classmethod
    def load(cls, path: str | Path) -> tuple[FeatureStats, dict[str, Any]]:
        """(statistics, metadata) of a file written by :meth:`save`."""
        return load_stats(path)


def save_stats(path: str | Path, stats: FeatureStats, meta: dict[str, Any]) -> Path:
    """Save ``stats`` with ``meta`` (JSON-serialisable) to ``path`` (``.npz``)."""
    p = Path(path)
    if p.suffix != ".npz":
        raise BadInputError(f"{p} does not end in .npz", "name the statistics file *.npz")
    p.parent.mkdir(parents=True, exist_ok=True)
    full = {"format": STATS_FORMAT, **meta}
    with p.open("wb") as fh:
        np.savez(
            fh,
            mu=stats.mean,
            sigma=stats.cov,
            m2=stats.m2,
            n=np.int64(stats.n),
            dims=np.int64(stats.dims),
            meta=np.array(json.dumps(full, sort_keys=True)),
        )
    return p


def load_stats(path: str | Path) -> tuple[FeatureStats, dict[str, Any]]:
    """Read a statistics file; errors name the fix when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p} does not exist", "pass a .npz written with --save-ref")
    try:
        with np.load(p, allow_pickle=False) as z:
            n, mu = int(z["n"]), np.asarray(z["mu"], dtype=np.float64)
            if "m2" in z:
                m2 = np.asarray(z["m2"], dtype=np.float64)
            else:
                m2 = np.asarray(z["sigma"], dtype=np.float64) * max(n - 1, 1)
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
    except (KeyError, ValueError, OSError) as err:
        raise BadInputError(
            f"{p} is not a biofm statistics file ({err})",
            "recompute it with 'biofm fid REAL FAKE --save-ref OUT.npz'",
        ) from err
    return FeatureStats.from_moments(n, mu, m2), meta


def fingerprint(model_sha: str, preprocessing: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the model hash and the preprocessing settings."""
    blob = json.dumps(
        {"model_sha256": model_sha, "preprocessing": preprocessing},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


_WHAT = {
    "model_sha256": ("model", "use the encoder the reference statistics were made with"),
    "channels": ("channels", "present the same channels in the same order (--channels)"),
    "scaling": (
        "per-channel scaling",
        "reuse the reference set's scaling: pass its statistics file as REAL or with --ref-stats",
    ),
    "crop": ("crop size", "use the crop size of the reference statistics (--crop)"),
}


def check_compatible(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> None:
    """Raise ``ConfigError`` naming what differs when two metadata fingerprints differ.

    Each metadata holds ``fingerprint``, ``model_sha256`` and ``preprocessing`` (a dict).
    """
    fa, fb = meta_a.get("fingerprint"), meta_b.get("fingerprint")
    if fa is None or fb is None:
        raise ConfigError(
            "statistics without a fingerprint cannot be compared safely",
            "recompute the reference statistics with 'biofm fid --save-ref'",
        )
    if fa == fb:
        return
    pa, pb = meta_a.get("preprocessing", {}), meta_b.get("preprocessing", {})
    diffs: list[str] = []
    fixes: list[str] = []
    if meta_a.get("model_sha256") != meta_b.get("model_sha256"):
        diffs.append(
            f"model ({str(meta_a.get('model_sha256'))[:12]} vs "
            f"{str(meta_b.get('model_sha256'))[:12]})"
        )
        fixes.append(_WHAT["model_sha256"][1])
    for key in sorted(set(pa) | set(pb)):
        if pa.get(key) != pb.get(key):
            label, fix = _WHAT.get(key, (key, f"use the same {key} as the reference"))
            diffs.append(f"{label} ({pa.get(key)!r} vs {pb.get(key)!r})")
            fixes.append(fix)
    if not diffs:
        diffs.append("fingerprint")
        fixes.append("recompute both statistics with this version of biofm")
    raise ConfigError(
        "features were made differently and cannot be compared: differs in " + "; ".join(diffs),
        "; ".join(dict.fromkeys(fixes)),
    )
