"""Nearest-neighbour probes on frozen embeddings (numpy + scikit-learn, no torch).

- ``one_nn_macro_f1``: 1-NN (cosine) macro-F1 under cross-validation, the CHAMMI protocol.
- ``knn_top1``: k-NN top-1 accuracy, cosine similarity, votes weighted by
  ``exp(sim / temperature)`` over the k nearest (DINO protocol, temperature 0.07).
- ``evaluate_knn``: both on the same folds, plus counts.

Folds: ``StratifiedKFold`` or, with ``groups`` (plate, donor, batch...), ``StratifiedGroupKFold``
so that no group is in both train and test. Embeddings are L2-normalised first.

Small classes: a class with a single member can never be predicted right under CV, so it is
dropped with a warning (reported as ``dropped_classes``). When the smallest remaining class has
fewer members than ``n_splits``, the number of folds is reduced to that count (at least 2) with a
warning. Fewer than two classes left, or non-finite embeddings, are errors naming the fix.
Means and standard deviations are over folds (population std). Macro-F1 averages over the
classes present in each test fold (true or predicted).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from biofm.core.errors import BadInputError

TEMPERATURE = 0.07
_CHUNK = 1024  # test rows per similarity block: memory stays O(chunk * n_train)

Split = tuple[NDArray[np.intp], NDArray[np.intp]]


@dataclass
class Prepared:
    """Normalised embeddings, integer labels and the CV folds shared by every probe."""

    x: NDArray[np.float32]
    y: NDArray[np.intp]
    classes: list[Any]
    splits: list[Split]
    grouped: bool
    dropped_classes: list[Any] = field(default_factory=list)
    n_dropped_samples: int = 0


def l2_normalize(emb: ArrayLike) -> NDArray[np.float32]:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def check_rows(x: np.ndarray, groups: ArrayLike | None) -> np.ndarray | None:
    """Refuse non-finite embedding rows and a group array of the wrong length; the groups."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise BadInputError(
            f"{int(bad.sum())} embedding rows hold NaN/inf (first rows {rows})",
            "drop those rows or re-embed them (check the input images and the model's dtype)",
        )
    g = None if groups is None else np.asarray(groups)
    if g is not None and (g.ndim != 1 or len(g) != len(x)):
        raise BadInputError(f"{len(g)} groups for {len(x)} embeddings", "one group per row")
    return g


def _check_inputs(
    emb: ArrayLike, labels: ArrayLike, groups: ArrayLike | None
) -> tuple[NDArray[np.float32], np.ndarray, np.ndarray | None]:
    x = np.asarray(emb, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise BadInputError(f"embeddings have shape {x.shape}", "pass a 2-D array (n_samples, dim)")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise BadInputError(
            f"{len(y)} labels for {len(x)} embeddings", "pass one label per embedding row"
        )
    return x, y, check_rows(x, groups)


def _drop_singletons(
    x: np.ndarray, y: np.ndarray, g: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[Any], int]:
    values, counts = np.unique(y, return_counts=True)
    single = values[counts < 2]
    if len(single) == 0:
        return x, y, g, [], 0
    keep = ~np.isin(y, single)
    warnings.warn(
        f"dropping {len(single)} class(es) with a single sample ({single[:5].tolist()}...): "
        "they cannot be both trained on and tested",
        stacklevel=3,
    )
    return x[keep], y[keep], None if g is None else g[keep], single.tolist(), int((~keep).sum())


def _folds(y: np.ndarray, g: np.ndarray | None, n_splits: int, seed: int) -> list[Split]:
    if g is None:
        limit, why = int(np.bincount(y).min()), "the smallest class has"
    else:
        limit, why = len(np.unique(g)), "there are"
        if limit < 2:
            raise BadInputError(
                "all samples are in one group", "pass a group column with at least 2 values"
            )
    if limit < n_splits:
        unit = "samples" if g is None else "groups"
        warnings.warn(
            f"reducing folds from {n_splits} to {limit}: {why} only {limit} {unit}",
            stacklevel=3,
        )
        n_splits = limit
    if g is None:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(cv.split(np.zeros(len(y)), y))
    gcv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(gcv.split(np.zeros(len(y)), y, g))


def prepare(
    emb: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    n_splits: int = 5,
    seed: int = 0,
    normalize: bool = True,
) -> Prepared:
    """Validate, drop singleton classes, L2-normalise (unless ``normalize=False``) and build
    the CV folds."""
    if n_splits < 2:
        raise BadInputError(f"n_splits={n_splits}", "use at least 2 folds")
    x, y, g = _check_inputs(emb, labels, groups)
    x, y, g, dropped, n_dropped = _drop_singletons(x, y, g)
    classes, y_int = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise BadInputError(
            f"only {len(classes)} class with 2+ samples",
            "evaluate a label column with at least two classes of 2+ samples each",
        )
    splits = _folds(y_int, g, n_splits, seed)
    return Prepared(
        l2_normalize(x) if normalize else x, y_int.astype(np.intp), classes.tolist(), splits,
        g is not None, dropped, n_dropped,
    )  # fmt: skip


def _similarity_blocks(
    x: NDArray[np.float32], train: NDArray[np.intp], test: NDArray[np.intp]
) -> Iterator[tuple[slice, NDArray[np.float32]]]:
    xt = x[train].T
    for start in range(0, len(test), _CHUNK):
        block = slice(start, start + _CHUNK)
        yield block, x[test[block]] @ xt


def _predict_1nn(p: Prepared, train: NDArray[np.intp], test: NDArray[np.intp]) -> np.ndarray:
    pred = np.empty(len(test), dtype=np.intp)
    for block, sim in _similarity_blocks(p.x, train, test):
        pred[block] = p.y[train][np.argmax(sim, axis=1)]
    return pred


def _predict_knn(
    p: Prepared, train: NDArray[np.intp], test: NDArray[np.intp], k: int, temperature: float
) -> np.ndarray:
    k = min(k, len(train))
    n_classes = len(p.classes)
    y_train = p.y[train]
    pred = np.empty(len(test), dtype=np.intp)
    for block, sim in _similarity_blocks(p.x, train, test):
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
        votes = np.zeros((len(sim), n_classes))
        rows = np.repeat(np.arange(len(sim)), k)
        np.add.at(votes, (rows, y_train[top].ravel()), weights.ravel())
        pred[block] = np.argmax(votes, axis=1)
    return pred


def _summary(scores: list[float], **extra: Any) -> dict[str, Any]:
    arr = np.asarray(scores, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "folds": arr.tolist(), **extra}


def one_nn_macro_f1_prepared(p: Prepared) -> dict[str, Any]:
    """1-NN macro-F1 on already prepared folds."""
    scores = []
    for train, test in p.splits:
        pred = _predict_1nn(p, train, test)
        # macro over the classes present in the fold (true or predicted): under grouped folds
        # a class can be absent from a test fold and must not count as a zero
        f1 = f1_score(p.y[test], pred, average="macro", zero_division=0)
        scores.append(float(f1))
    return _summary(scores, metric="1nn_macro_f1")


def knn_top1_prepared(p: Prepared, k: int = 20, temperature: float = TEMPERATURE) -> dict:
    """Weighted k-NN top-1 accuracy on already prepared folds."""
    if k < 1:
        raise BadInputError(f"k={k}", "use k >= 1")
    scores = [
        float(np.mean(_predict_knn(p, train, test, k, temperature) == p.y[test]))
        for train, test in p.splits
    ]
    return _summary(scores, metric="knn_top1", k=k, temperature=temperature)


def one_nn_macro_f1(
    emb: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """1-NN (cosine) macro-F1, mean/std/per-fold over stratified (grouped) K-fold CV."""
    p = prepare(emb, labels, groups, n_splits, seed)
    return {**one_nn_macro_f1_prepared(p), "n_splits": len(p.splits)}


def knn_top1(
    emb: ArrayLike,
    labels: ArrayLike,
    k: int = 20,
    n_splits: int = 5,
    seed: int = 0,
    groups: ArrayLike | None = None,
    temperature: float = TEMPERATURE,
) -> dict[str, Any]:
    """k-NN top-1 accuracy (cosine, exp(sim/T)-weighted votes) over stratified K-fold CV."""
    p = prepare(emb, labels, groups, n_splits, seed)
    return {**knn_top1_prepared(p, k, temperature), "n_splits": len(p.splits)}


def evaluate_knn(
    emb: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    k: int = 20,
    n_splits: int = 5,
    seed: int = 0,
    temperature: float = TEMPERATURE,
) -> dict[str, Any]:
    """Both probes on the same folds, with sample/class counts (JSON-serialisable)."""
    p = prepare(emb, labels, groups, n_splits, seed)
    return {
        "n_samples": len(p.y),
        "n_classes": len(p.classes),
        "dim": int(p.x.shape[1]),
        "n_splits": len(p.splits),
        "grouped": p.grouped,
        "seed": seed,
        "dropped_classes": [_jsonable(c) for c in p.dropped_classes],
        "n_dropped_samples": p.n_dropped_samples,
        "one_nn_macro_f1": one_nn_macro_f1_prepared(p),
        "knn_top1": knn_top1_prepared(p, k, temperature),
    }


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
