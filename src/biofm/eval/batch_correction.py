"""Well-level profiles: aggregation, and batch correction fitted on control rows per batch.

``aggregate_profiles`` averages per-crop/per-cell embeddings (mean or median) over metadata keys
such as plate + well, keeping the metadata columns constant within each group.

Every function is pure: it takes embeddings ``(N, D)``, their metadata, the name of the batch
column (``None``: all rows form one batch) and a boolean mask of the control rows (e.g. DMSO or
non-targeting wells), and returns a new float64 array. The statistics are estimated on the
controls of each batch and applied to every row of that batch, so perturbation signal never
leaks into the correction.

- ``center_scale``: subtract the control mean and divide by the control standard deviation
  (population std, ``ddof=0``) of each batch, feature by feature; features constant on the
  controls are only centred. This is ``centerscale_on_controls`` of the EFAAR pipeline
  (Celik et al., PLoS Comput Biol 2024) and pycytominer's ``normalize(method="standardize",
  samples=<controls>)``.
- ``sphere``: ZCA whitening (Bell & Sejnowski 1997; Kessy, Lewin & Strimmer, Am Stat 2018):
  ``x <- (x - mu_c) U diag(1 / sqrt(s + epsilon)) U^T`` with ``U diag(s) U^T`` the covariance of
  the batch's controls. ZCA on the correlation matrix differs from it only by a rotation, which
  leaves cosine similarities (and hence mAP) unchanged.
- ``tvn``: Typical Variation Normalisation (Ando et al., bioRxiv 161422, 2017): centre/scale on
  controls, PCA fitted on the pooled controls, centre/scale the principal-component scores on
  the controls again (whitening), then optionally CORAL per batch (Sun, Feng & Saenko, AAAI
  2016): ``x_b <- x_b (C_b + lambda I)^(-1/2) (C + lambda I)^(1/2)`` with ``C_b`` the covariance
  of the batch's controls, ``C`` that of all controls and ``lambda = 0.5``.
- ``correct``: dispatch by method name (``none``, ``center_scale``, ``sphere``, ``tvn``,
  ``tvn_coral``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from biofm.core.errors import BadInputError, ConfigError

COUNT_COL = "n_aggregated"
METHODS = ("none", "center_scale", "sphere", "tvn", "tvn_coral")
CORAL_LAMBDA = 0.5
_TINY = 1e-12

Array = NDArray[np.float64]


def check_embeddings(emb: ArrayLike, meta: pd.DataFrame) -> Array:
    """``emb`` as a finite 2-D float64 array with one metadata row per row, else an error."""
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise BadInputError(f"embeddings have shape {x.shape}", "pass a 2-D array (n_rows, dim)")
    if len(meta) != len(x):
        raise BadInputError(
            f"{len(meta)} metadata rows for {len(x)} embeddings", "pass one metadata row per row"
        )
    if not np.isfinite(x).all():
        raise BadInputError(
            f"{int((~np.isfinite(x).all(axis=1)).sum())} embedding rows hold NaN/inf",
            "drop or re-embed those rows",
        )
    return x


def _check(
    emb: ArrayLike, meta: pd.DataFrame, batch_col: str | None, control_mask: ArrayLike
) -> tuple[Array, np.ndarray, NDArray[np.bool_]]:
    x = check_embeddings(emb, meta)
    mask = np.asarray(control_mask)
    if mask.shape != (len(x),) or mask.dtype != np.bool_:
        raise BadInputError(
            f"control_mask has shape {mask.shape} and dtype {mask.dtype}",
            "pass one boolean per row, e.g. meta['Metadata_pert'] == 'DMSO'",
        )
    if batch_col is None:
        return x, np.zeros(len(x), dtype=np.intp), mask
    if batch_col not in meta.columns:
        raise BadInputError(
            f"batch column {batch_col!r} is not in the metadata ({list(meta.columns)[:20]})",
            "pass the plate/batch column name, or batch_col=None for a single batch",
        )
    values = meta[batch_col]
    if values.isna().any():
        raise BadInputError(
            f"batch column {batch_col!r} has {int(values.isna().sum())} missing values",
            "fill the plate/batch of every row",
        )
    return x, np.asarray(values), mask


def aggregate_profiles(
    emb: ArrayLike, meta: pd.DataFrame, keys: Sequence[str], method: str = "mean"
) -> tuple[NDArray[np.float64], pd.DataFrame]:
    """Mean or median of the rows sharing the same ``keys`` values (e.g. plate and well).

    Returns ``(profiles (G, D) float64, meta_out)``; ``meta_out`` holds the keys, every other
    metadata column that is constant within each group (e.g. the perturbation) and
    ``n_aggregated``, the number of rows averaged. Groups are sorted by key.
    """
    if method not in ("mean", "median"):
        raise ConfigError(f"aggregation method {method!r}", "use 'mean' or 'median'")
    x = check_embeddings(emb, meta)
    keys = list(keys)
    missing = [k for k in keys if k not in meta.columns]
    if not keys or missing:
        raise BadInputError(
            f"aggregation keys {missing or keys} are not metadata columns",
            f"pass columns of the metadata, e.g. plate and well (have {list(meta.columns)[:20]})",
        )
    if meta[keys].isna().any(axis=None):
        raise BadInputError(f"aggregation keys {keys} have missing values", "fill or drop them")
    groups = meta.reset_index(drop=True).groupby(keys, sort=True)
    codes = groups.ngroup().to_numpy()
    feats = pd.DataFrame(x).groupby(codes, sort=True)
    profiles = (feats.mean() if method == "mean" else feats.median()).to_numpy(np.float64)
    others = [c for c in meta.columns if c not in keys]
    const = [c for c in others if (groups[c].nunique(dropna=False) <= 1).all()]
    out = groups[const].first() if const else groups.size().to_frame(COUNT_COL)
    out = out.reset_index()
    out[COUNT_COL] = groups.size().to_numpy()
    return profiles, out


def _batches(
    batch: np.ndarray, mask: NDArray[np.bool_], min_controls: int, batch_col: str | None
) -> list[tuple[Any, NDArray[np.bool_], NDArray[np.bool_]]]:
    """(batch value, rows of the batch, control rows of the batch) for every batch."""
    groups = []
    for value in pd.unique(batch):
        rows = batch == value
        ctrl = rows & mask
        n = int(ctrl.sum())
        if n < min_controls:
            name = "all rows" if batch_col is None else f"{batch_col}={value!r}"
            have = "no control rows" if n == 0 else f"only {n} control row(s)"
            raise BadInputError(
                f"{name} has {have}; the correction needs at least {min_controls} per batch",
                "add control wells to that batch, drop its rows, or fit on all controls "
                "together with batch_col=None",
            )
        groups.append((value, rows, ctrl))
    return groups


def _scale(std: Array) -> Array:
    return np.where(std > _TINY, std, 1.0)


def center_scale(
    emb: ArrayLike,
    meta: pd.DataFrame,
    batch_col: str | None,
    control_mask: ArrayLike,
    min_controls: int = 2,
) -> Array:
    """Per batch ``(x - mean_controls) / std_controls``; features constant on controls: centred."""
    x, batch, mask = _check(emb, meta, batch_col, control_mask)
    out = np.empty_like(x)
    for _, rows, ctrl in _batches(batch, mask, min_controls, batch_col):
        mu = x[ctrl].mean(axis=0)
        sd = _scale(x[ctrl].std(axis=0))
        out[rows] = (x[rows] - mu) / sd
    return out


def _sym_power(cov: Array, power: float, epsilon: float = 0.0) -> Array:
    """``(cov + epsilon I) ** power`` of a symmetric PSD matrix via its eigendecomposition."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None) + epsilon
    return np.asarray((vecs * vals**power) @ vecs.T, dtype=np.float64)


def sphere(
    emb: ArrayLike,
    meta: pd.DataFrame,
    batch_col: str | None,
    control_mask: ArrayLike,
    epsilon: float = 1e-6,
    min_controls: int = 2,
) -> Array:
    """ZCA whitening per batch, fitted on its controls: control covariance becomes ~identity.

    With fewer controls than dimensions the control covariance is singular: directions without
    control variance are multiplied by ``1 / sqrt(epsilon)``. A warning says so; raise
    ``epsilon``, reduce the dimension first (PCA) or use ``tvn``, which whitens in the span of
    the controls.
    """
    if epsilon <= 0:
        raise ConfigError(f"epsilon={epsilon}", "use a small positive epsilon, e.g. 1e-6")
    x, batch, mask = _check(emb, meta, batch_col, control_mask)
    out = np.empty_like(x)
    for value, rows, ctrl in _batches(batch, mask, min_controls, batch_col):
        c = x[ctrl]
        if len(c) <= x.shape[1]:
            warnings.warn(
                f"batch {value!r}: {len(c)} controls for {x.shape[1]} dimensions, the control "
                "covariance is singular; raise epsilon, reduce the dimension or use tvn",
                stacklevel=2,
            )
        mu = c.mean(axis=0)
        cov = np.cov(c, rowvar=False, ddof=0).reshape(x.shape[1], x.shape[1])
        out[rows] = (x[rows] - mu) @ _sym_power(cov, -0.5, epsilon)
    return out


def _pca_on_controls(x: Array, mask: NDArray[np.bool_], n_components: int | None) -> Array:
    """Scores of every row on the principal axes of the (pooled) controls with non-zero variance."""
    c = x[mask]
    mu = c.mean(axis=0)
    _, s, vt = np.linalg.svd(c - mu, full_matrices=False)
    keep = s > max(s[0], _TINY) * 1e-6 if len(s) else np.zeros(0, dtype=bool)
    k = int(keep.sum())
    if n_components is not None:
        k = min(k, n_components)
    if k == 0:
        raise BadInputError(
            "the control rows are all identical", "check the control mask and the embeddings"
        )
    return np.asarray((x - mu) @ vt[:k].T, dtype=np.float64)


def tvn(
    emb: ArrayLike,
    meta: pd.DataFrame,
    batch_col: str | None,
    control_mask: ArrayLike,
    n_components: int | None = None,
    coral: bool = False,
    coral_lambda: float = CORAL_LAMBDA,
    min_controls: int = 2,
) -> Array:
    """Typical Variation Normalisation (Ando et al. 2017), optionally with per-batch CORAL.

    Steps: center/scale per batch on controls; PCA fitted on all controls (components with
    non-zero control variance, at most ``n_components``); center/scale the scores per batch on
    controls (whitening); with ``coral=True`` each batch's control covariance is aligned to the
    pooled control covariance, both regularised with ``coral_lambda * I``. The output has as
    many columns as kept components.
    """
    if n_components is not None and n_components < 1:
        raise ConfigError(f"n_components={n_components}", "use None or a positive integer")
    if coral_lambda <= 0:
        raise ConfigError(f"coral_lambda={coral_lambda}", "use a positive value (default 0.5)")
    x, batch, mask = _check(emb, meta, batch_col, control_mask)
    _batches(batch, mask, min_controls, batch_col)  # fail early, before any work
    z = center_scale(x, meta, batch_col, mask, min_controls)
    z = _pca_on_controls(z, mask, n_components)
    z = center_scale(z, meta, batch_col, mask, min_controls)
    if not coral or batch_col is None:
        return z
    eye = coral_lambda * np.eye(z.shape[1])
    target = _sym_power(np.atleast_2d(np.cov(z[mask], rowvar=False)) + eye, 0.5)
    out = np.empty_like(z)
    for _, rows, ctrl in _batches(batch, mask, min_controls, batch_col):
        source = np.atleast_2d(np.cov(z[ctrl], rowvar=False)) + eye
        out[rows] = z[rows] @ _sym_power(source, -0.5) @ target
    return out


def correct(
    emb: ArrayLike,
    meta: pd.DataFrame,
    method: str,
    batch_col: str | None,
    control_mask: ArrayLike,
    **options: Any,
) -> Array:
    """Apply one correction by name: ``none`` (a float64 copy), ``center_scale``, ``sphere``,
    ``tvn`` or ``tvn_coral`` (``tvn`` with ``coral=True``); ``options`` go to that function."""
    if method == "none":
        x, _, _ = _check(emb, meta, batch_col, control_mask)
        return x.copy()
    if method == "center_scale":
        return center_scale(emb, meta, batch_col, control_mask, **options)
    if method == "sphere":
        return sphere(emb, meta, batch_col, control_mask, **options)
    if method in ("tvn", "tvn_coral"):
        coral = options.pop("coral", method == "tvn_coral")
        return tvn(emb, meta, batch_col, control_mask, coral=coral, **options)
    raise ConfigError(f"unknown correction method {method!r}", f"use one of {', '.join(METHODS)}")
