"""Profiling metrics on well-level profiles: replicate retrieval and phenotypic activity (mAP).

The engine is copairs (Kalinin et al., "A versatile information retrieval framework for
evaluating profile strength and similarity", Nat Commun 16:5181, 2025), an optional dependency
(``pip install 'biofm[profiling]'``). Each profile is a query; the other profiles are ranked by
cosine similarity; the average precision (AP) of retrieving its positives among its negatives is
averaged per perturbation into a mean average precision (mAP), whose p-value comes from a
permutation null of random rankings with the same numbers of positives and negatives, corrected
for multiple testing (Benjamini-Hochberg). "Fraction retrieved" is the fraction of perturbations
whose corrected p-value is below ``threshold`` (0.05).

- ``aggregate_profiles`` (from :mod:`biofm.eval.batch_correction`): per-crop/per-cell
  embeddings -> one mean (or median) profile per key combination (e.g. plate + well).
- ``replicate_map``: positives = other profiles of the same perturbation (optionally required to
  differ in ``pos_diffby`` columns, e.g. the plate), negatives = profiles of other
  perturbations; control rows are ranked but are not queries.
- ``phenotypic_activity``: each perturbation against the controls, copairs' recipe: controls get
  a unique reference index (``assign_reference_index``), positives = same perturbation and
  reference, negatives = differing in both, so a query ranks its replicates among the controls.
- ``profile_report``: both metrics before and after each batch correction of
  :mod:`biofm.eval.batch_correction`.
- ``average_precision_ranking``: plain numpy AP of one query's ranking (reference for tests).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from biofm.core.errors import BadInputError, ConfigError, MissingExtraError
from biofm.eval.batch_correction import aggregate_profiles as aggregate_profiles
from biofm.eval.batch_correction import check_embeddings as _check_emb
from biofm.eval.batch_correction import correct

NULL_SIZE = 100_000
THRESHOLD = 0.05
_AP_COLS = ["average_precision", "n_pos_pairs", "n_total_pairs"]


def _copairs() -> tuple[ModuleType, ModuleType]:
    try:
        import copairs.map as cmap
        import copairs.matching as cmatch
    except ImportError as err:
        raise MissingExtraError("copairs", "profiling") from err
    return cmap, cmatch


def average_precision_ranking(scores: ArrayLike, relevant: ArrayLike) -> float:
    """AP of one query: candidates sorted by decreasing score, mean precision at each positive.

    Ties keep the input order (list positives first to match copairs, which ranks positives
    ahead of negatives of equal similarity).
    """
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(relevant, dtype=bool)
    if s.ndim != 1 or s.shape != r.shape:
        raise BadInputError(f"scores {s.shape} and relevant {r.shape}", "pass two 1-D arrays")
    if not r.any():
        raise BadInputError("the ranking has no positive", "give at least one relevant candidate")
    hits = r[np.argsort(-s, kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def _pair_frame(
    x: NDArray[np.float64],
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any,
    extra_cols: Sequence[str],
) -> tuple[pd.DataFrame, np.ndarray, NDArray[np.bool_]]:
    """copairs metadata with plain column names: ``pert`` codes and ``c0``, ``c1``... codes."""
    for col in [perturbation_col, *extra_cols]:
        if col not in meta.columns:
            raise BadInputError(
                f"column {col!r} is not in the metadata (columns: {list(meta.columns)[:20]})",
                "pass existing metadata column names",
            )
        if meta[col].isna().any():
            raise BadInputError(f"column {col!r} has missing values", "fill or drop those rows")
    if (np.linalg.norm(x, axis=1) == 0).any():
        raise BadInputError(
            "some profiles are all zeros (cosine similarity undefined)", "drop those rows"
        )
    codes, labels = pd.factorize(meta[perturbation_col].reset_index(drop=True))
    frame = pd.DataFrame({"pert": codes})
    for i, col in enumerate(extra_cols):
        frame[f"c{i}"] = pd.factorize(meta[col].reset_index(drop=True))[0]
    controls = np.zeros(len(x), dtype=bool)
    if control_value is not None:
        controls = (meta[perturbation_col] == control_value).to_numpy(dtype=bool)
        if not controls.any():
            raise BadInputError(
                f"no row has {perturbation_col} == {control_value!r}",
                f"pass the control label used in that column (values: {list(labels[:10])})",
            )
    return frame, np.asarray(labels), controls


def _ap(
    x: NDArray[np.float64], frame: pd.DataFrame, rules: dict[str, list[str]], distance: str
) -> pd.DataFrame:
    cmap, cmatch = _copairs()
    try:
        return cmap.average_precision(
            frame, x, **rules, distance=distance, progress_bar=False
        ).reset_index(drop=True)
    except cmatch.UnpairedException as err:
        raise BadInputError(
            f"no pairs to rank ({err})",
            "give at least two perturbations (or controls) and replicates of each perturbation",
        ) from err


def _map_table(
    ap: pd.DataFrame,
    labels: np.ndarray,
    perturbation_col: str,
    null_size: int,
    threshold: float,
    seed: int,
    cache_dir: str | os.PathLike[str] | None,
) -> pd.DataFrame:
    if null_size < 1 or not 0 < threshold < 1:
        raise ConfigError(
            f"null_size={null_size}, threshold={threshold}",
            "use null_size >= 1 (1e5 to 1e6 for publication) and 0 < threshold < 1",
        )
    scored = ap[ap["n_pos_pairs"] > 0]
    if scored.empty:
        raise BadInputError(
            "no query profile has a positive pair",
            "give each perturbation at least two profiles (e.g. wells on several plates)",
        )
    cmap, _ = _copairs()
    table = cmap.mean_average_precision(
        scored, ["pert"], null_size, threshold, seed, progress_bar=False, cache_dir=cache_dir
    )
    table = table.drop(columns=["indices"], errors="ignore")
    table["n_profiles"] = table["pert"].map(scored.groupby("pert").size())
    names = labels[table.pop("pert").to_numpy()]
    table.insert(0, perturbation_col, names)
    table = table.sort_values(perturbation_col, ignore_index=True)
    table.attrs = summarize(table) | {
        "n_without_replicates": int(ap.loc[ap["n_pos_pairs"] == 0, "pert"].nunique())
    }
    return table


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """``mean_map`` over perturbations, ``fraction_retrieved`` (corrected p below threshold)."""
    return {
        "mean_map": float(table["mean_average_precision"].mean()),
        "fraction_retrieved": float(table["below_corrected_p"].mean()),
        "n_perturbations": len(table),
    }


def _per_profile(ap: pd.DataFrame, meta: pd.DataFrame, keep: NDArray[np.bool_]) -> pd.DataFrame:
    out = meta.reset_index(drop=True).copy()
    out[_AP_COLS] = ap[_AP_COLS].to_numpy()
    return out[keep].reset_index(drop=True)


def _replicate_ap(
    x: NDArray[np.float64],
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any,
    pos_diffby: Sequence[str],
    distance: str,
) -> tuple[pd.DataFrame, np.ndarray, NDArray[np.bool_]]:
    frame, labels, controls = _pair_frame(x, meta, perturbation_col, control_value, pos_diffby)
    diff = [f"c{i}" for i in range(len(pos_diffby))]
    rules = {"pos_sameby": ["pert"], "pos_diffby": diff, "neg_sameby": [], "neg_diffby": ["pert"]}
    return _ap(x, frame, rules, distance), labels, controls


def replicate_average_precision(
    emb: ArrayLike,
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any = None,
    pos_diffby: Sequence[str] = (),
    distance: str = "cosine",
) -> pd.DataFrame:
    """Per-profile AP of replicate retrieval (metadata + ``average_precision``, ``n_pos_pairs``,
    ``n_total_pairs``); control rows are candidates but not queries."""
    x = _check_emb(emb, meta)
    ap, _, controls = _replicate_ap(x, meta, perturbation_col, control_value, pos_diffby, distance)
    return _per_profile(ap, meta, ~controls)


def replicate_map(
    emb: ArrayLike,
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any = None,
    pos_diffby: Sequence[str] = (),
    null_size: int = NULL_SIZE,
    threshold: float = THRESHOLD,
    seed: int = 0,
    distance: str = "cosine",
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """mAP of retrieving the replicates of each perturbation against other perturbations.

    Returns one row per perturbation: ``mean_average_precision``, ``p_value``,
    ``corrected_p_value``, ``below_p``, ``below_corrected_p``, ``n_profiles``; ``.attrs`` holds
    :func:`summarize` (``mean_map``, ``fraction_retrieved``) and ``n_without_replicates``.
    ``cache_dir``: where copairs caches null distributions (default ``~/.copairs``).
    """
    x = _check_emb(emb, meta)
    ap, labels, controls = _replicate_ap(
        x, meta, perturbation_col, control_value, pos_diffby, distance
    )
    return _map_table(ap[~controls], labels, perturbation_col, null_size, threshold, seed,
                      cache_dir)  # fmt: skip


def _activity_ap(
    x: NDArray[np.float64],
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any,
    batch_col: str | None,
    distance: str,
) -> tuple[pd.DataFrame, np.ndarray, NDArray[np.bool_]]:
    if control_value is None:
        raise BadInputError("phenotypic activity needs controls", "pass control_value")
    extra = [] if batch_col is None else [batch_col]
    frame, labels, controls = _pair_frame(x, meta, perturbation_col, control_value, extra)
    _, cmatch = _copairs()
    frame = cmatch.assign_reference_index(
        frame, pd.Index(np.flatnonzero(controls)), reference_col="ref", default_value=-1
    )
    rules = {
        "pos_sameby": ["pert", "ref"],
        "pos_diffby": [],
        "neg_sameby": ["c0"] if batch_col else [],
        "neg_diffby": ["pert", "ref"],
    }
    return _ap(x, frame, rules, distance), labels, controls


def phenotypic_activity(
    emb: ArrayLike,
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any,
    batch_col: str | None = None,
    null_size: int = NULL_SIZE,
    threshold: float = THRESHOLD,
    seed: int = 0,
    distance: str = "cosine",
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """mAP of retrieving each perturbation's replicates among the controls (copairs' recipe).

    A perturbation is "active" (``below_corrected_p``) when its replicates are more similar to
    each other than to the controls beyond chance. With ``batch_col`` each query is ranked only
    against controls of its own batch. Output columns as :func:`replicate_map`.
    """
    x = _check_emb(emb, meta)
    ap, labels, controls = _activity_ap(
        x, meta, perturbation_col, control_value, batch_col, distance
    )
    return _map_table(
        ap[~controls], labels, perturbation_col, null_size, threshold, seed, cache_dir
    )


def activity_average_precision(
    emb: ArrayLike,
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Any,
    batch_col: str | None = None,
    distance: str = "cosine",
) -> pd.DataFrame:
    """Per-profile AP of the phenotypic-activity recipe (controls dropped from the output)."""
    x = _check_emb(emb, meta)
    ap, _, controls = _activity_ap(x, meta, perturbation_col, control_value, batch_col, distance)
    return _per_profile(ap, meta, ~controls)


def profile_report(
    emb: ArrayLike,
    meta: pd.DataFrame,
    perturbation_col: str,
    control_value: Hashable,
    batch_col: str | None,
    methods: Sequence[str] = ("none", "center_scale", "sphere", "tvn"),
    pos_diffby: Sequence[str] = (),
    null_size: int = NULL_SIZE,
    threshold: float = THRESHOLD,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Replicate and activity mAP / fraction retrieved before (``none``) and after each correction.

    Each correction is fitted on the control rows (``perturbation_col == control_value``) of
    each ``batch_col`` value; ``options[method]`` holds keyword arguments for that method.
    One row per method: ``replicate_map``, ``replicate_fraction_retrieved``, ``activity_map``,
    ``activity_fraction_retrieved``, ``n_perturbations``, ``dim`` (after correction).
    """
    x = _check_emb(emb, meta)
    _pair_frame(x, meta, perturbation_col, control_value, [])
    controls = (meta[perturbation_col] == control_value).to_numpy(dtype=bool)
    common: dict[str, Any] = {
        "null_size": null_size,
        "threshold": threshold,
        "seed": seed,
        "cache_dir": cache_dir,
    }
    rows = []
    for method in methods:
        y = correct(x, meta, method, batch_col, controls, **(options or {}).get(method, {}))
        rep = replicate_map(y, meta, perturbation_col, control_value, pos_diffby, **common)
        act = phenotypic_activity(y, meta, perturbation_col, control_value, **common)
        rows.append(
            {
                "method": method,
                "replicate_map": rep.attrs["mean_map"],
                "replicate_fraction_retrieved": rep.attrs["fraction_retrieved"],
                "activity_map": act.attrs["mean_map"],
                "activity_fraction_retrieved": act.attrs["fraction_retrieved"],
                "n_perturbations": rep.attrs["n_perturbations"],
                "dim": y.shape[1],
            }
        )
    return pd.DataFrame(rows)
