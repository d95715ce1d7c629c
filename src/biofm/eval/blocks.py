"""Per-block probe: which block of an encoder holds the most linearly/neighbour-readable signal.

``block_probe`` scores each block's pooled features (``biofm embed --blocks``) with the same
probe on the same folds and reports one row per block plus the best block:

- ``probe="knn"``: 1-NN macro-F1 (primary, the CHAMMI protocol) and k-NN top-1 accuracy;
- ``probe="linear"``: logistic-regression macro-F1 (primary) and accuracy.

Folds depend only on the labels, groups and seed, so every block is scored on identical splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from biofm.core.errors import BadInputError
from biofm.eval.knn import knn_top1_prepared, one_nn_macro_f1_prepared, prepare
from biofm.eval.linear import linear_classification

PROBES = {"knn": ("one_nn_macro_f1", "knn_top1"), "linear": ("macro_f1", "accuracy")}


def _check(features_by_block: Mapping[Any, ArrayLike]) -> dict[Any, np.ndarray]:
    if not features_by_block:
        raise BadInputError(
            "there are no per-block features",
            "embed with `biofm embed --blocks` (all blocks) or --blocks 3,6,11",
        )
    feats = {k: np.asarray(v, dtype=np.float32) for k, v in features_by_block.items()}
    rows = {k: v.shape[0] if v.ndim == 2 else -1 for k, v in feats.items()}
    if len(set(rows.values())) != 1 or -1 in rows.values():
        raise BadInputError(
            f"blocks have different row counts or are not 2-D: {rows}",
            "pass one (n_samples, dim) array per block, same rows in each",
        )
    return feats


def _score_block(
    x: np.ndarray,
    labels: ArrayLike,
    groups: ArrayLike | None,
    probe: str,
    n_splits: int,
    seed: int,
    k: int,
    c: float,
) -> dict[str, Any]:
    if probe == "knn":
        p = prepare(x, labels, groups, n_splits, seed)
        return {
            "n_samples": len(p.y),
            "n_classes": len(p.classes),
            "n_splits": len(p.splits),
            "grouped": p.grouped,
            "one_nn_macro_f1": one_nn_macro_f1_prepared(p),
            "knn_top1": knn_top1_prepared(p, k),
        }
    return linear_classification(x, labels, groups, n_splits, seed, c=c)


def block_probe(
    features_by_block: Mapping[Any, ArrayLike],
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    probe: str = "knn",
    n_splits: int = 5,
    seed: int = 0,
    k: int = 20,
    c: float = 1.0,
) -> dict[str, Any]:
    """Score every block with ``probe`` ("knn" or "linear"); returns a JSON-ready dict with
    ``blocks`` (one row per block: ``block``, ``dim``, primary and secondary metric
    mean/std/folds) and ``best_block`` / ``best_score`` (highest primary mean; ties go to the
    earlier block)."""
    if probe not in PROBES:
        raise BadInputError(f"probe {probe!r} is not known", f"use one of {sorted(PROBES)}")
    primary, secondary = PROBES[probe]
    feats = _check(features_by_block)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for block in sorted(feats, key=_order):
        res = _score_block(feats[block], labels, groups, probe, n_splits, seed, k, c)
        info = {key: res[key] for key in ("n_samples", "n_classes", "n_splits", "grouped")}
        rows.append(
            {
                "block": _jsonable(block),
                "dim": int(feats[block].shape[1]),
                primary: res[primary],
                secondary: res[secondary],
            }
        )
    best = max(rows, key=lambda r: (r[primary]["mean"], -rows.index(r)))
    return {
        "probe": probe,
        "metric": primary,
        "secondary_metric": secondary,
        **info,
        "seed": seed,
        "blocks": rows,
        "best_block": best["block"],
        "best_score": best[primary]["mean"],
    }


def _order(key: Any) -> tuple[int, Any]:
    return (0, int(key)) if isinstance(key, (int, np.integer)) else (1, str(key))


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
