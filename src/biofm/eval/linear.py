"""Linear probes on frozen embeddings (scikit-learn, no torch).

- ``linear_classification``: multinomial logistic regression on standardised embeddings
  (scaler fitted on each training fold only); accuracy, balanced accuracy and macro-F1 over
  the same stratified K-fold or, with ``groups`` (plate, well...), ``StratifiedGroupKFold``
  folds as the k-NN probes, so near-duplicates never straddle train and test.
- ``linear_regression``: ridge regression of a numeric target (e.g. nuclei per image) on
  standardised embeddings; R^2 and mean absolute error over K-fold or, with ``groups``,
  ``GroupKFold`` folds.

Every metric is reported as ``{"mean", "std", "folds"}`` (population std over folds). The
regularisation strength is fixed (not tuned per fold) so that probes of different encoders are
compared at the same capacity; ``c`` / ``alpha`` change it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
)
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from biofm.core.errors import BadInputError
from biofm.eval.knn import check_rows, prepare

_ALPHAS = np.logspace(-3, 4, 15)
"""Ridge penalties tried when ``alpha=None``."""


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "folds": arr.tolist()}


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def linear_classification(
    emb: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    n_splits: int = 5,
    seed: int = 0,
    c: float = 1.0,
    max_iter: int = 2000,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Logistic-regression probe: accuracy, balanced accuracy and macro-F1, each
    mean/std/per-fold, plus counts. Classes with one sample are dropped (with a warning);
    errors name the fix for non-finite embeddings, too few classes, or labels confounded with
    the groups. ``return_predictions`` adds ``"predictions"``: the true and out-of-fold
    predicted class indices and the class names (``y``, ``pred``, ``classes``)."""
    p = prepare(emb, labels, groups, n_splits, seed, normalize=False)
    oof = np.full(len(p.y), -1, dtype=np.intp)
    acc: list[float] = []
    bal: list[float] = []
    f1: list[float] = []
    for train, test in p.splits:
        if len(np.unique(p.y[train])) < 2:
            raise BadInputError(
                "a training fold holds a single class: the labels follow the groups",
                "group by a column that cuts across the labels (e.g. plate, not treatment), "
                "or drop --group",
            )
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        clf.fit(p.x[train], p.y[train])
        pred = clf.predict(p.x[test])
        oof[test] = pred
        acc.append(float(accuracy_score(p.y[test], pred)))
        with warnings.catch_warnings():  # a class absent from a grouped test fold
            warnings.simplefilter("ignore", UserWarning)
            bal.append(float(balanced_accuracy_score(p.y[test], pred)))
        f1.append(float(f1_score(p.y[test], pred, average="macro", zero_division=0)))
    return {
        "n_samples": len(p.y),
        "n_classes": len(p.classes),
        "dim": int(p.x.shape[1]),
        "n_splits": len(p.splits),
        "grouped": p.grouped,
        "seed": seed,
        "C": c,
        "dropped_classes": [_jsonable(v) for v in p.dropped_classes],
        "n_dropped_samples": p.n_dropped_samples,
        "accuracy": _stats(acc),
        "balanced_accuracy": _stats(bal),
        "macro_f1": _stats(f1),
        **({"predictions": {"y": p.y, "pred": oof, "classes": list(p.classes)}}
           if return_predictions else {}),
    }  # fmt: skip


def _regression_inputs(
    emb: ArrayLike, target: ArrayLike, groups: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise BadInputError(f"embeddings have shape {x.shape}", "pass a 2-D array (n_samples, dim)")
    try:
        y = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise BadInputError(
            "the target is not numeric", "pass a numeric target column (counts, areas, intensities)"
        ) from err
    if y.ndim != 1 or len(x) != len(y):
        raise BadInputError(
            f"embeddings {x.shape} and target {y.shape} do not match",
            "pass one target value per embedding row",
        )
    g = check_rows(x, groups)
    keep = np.isfinite(y)
    return x[keep], y[keep], None if g is None else g[keep], int((~keep).sum())


def linear_regression(
    emb: ArrayLike,
    target: ArrayLike,
    n_splits: int = 5,
    seed: int = 0,
    alpha: float | None = 1.0,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """Ridge probe of a numeric target: R^2 and MAE mean/std/per-fold. Rows with a missing
    (NaN) target are dropped and counted; with ``groups`` the folds keep each group whole
    (``GroupKFold``; ``seed`` then plays no part). ``alpha=None`` picks the ridge penalty
    inside each training fold (efficient leave-one-out over 1e-3..1e4), never on the test
    fold."""
    if n_splits < 2:
        raise BadInputError(f"n_splits={n_splits}", "use at least 2 folds")
    x, y, g, n_dropped = _regression_inputs(emb, target, groups)
    if len(y) < 2 * n_splits:
        raise BadInputError(
            f"only {len(y)} rows with a finite target",
            f"give at least {2 * n_splits} rows or fewer folds (--folds)",
        )
    if g is not None:
        n_groups = len(np.unique(g))
        if n_groups < 2:
            raise BadInputError(
                "all samples are in one group", "pass a group column with at least 2 values"
            )
        if n_groups < n_splits:
            warnings.warn(
                f"reducing folds from {n_splits} to {n_groups}: there are only {n_groups} groups",
                stacklevel=2,
            )
            n_splits = n_groups
        splits = list(GroupKFold(n_splits).split(x, y, g))
    else:
        splits = list(KFold(n_splits, shuffle=True, random_state=seed).split(x))
    r2: list[float] = []
    mae: list[float] = []
    for train, test in splits:
        ridge = Ridge(alpha=alpha) if alpha is not None else RidgeCV(alphas=_ALPHAS)
        reg = make_pipeline(StandardScaler(), ridge)
        reg.fit(x[train], y[train])
        pred = reg.predict(x[test])
        r2.append(float(r2_score(y[test], pred)))
        mae.append(float(mean_absolute_error(y[test], pred)))
    return {
        "n_samples": len(y),
        "n_dropped_samples": n_dropped,
        "dim": int(x.shape[1]),
        "n_splits": n_splits,
        "grouped": g is not None,
        "seed": seed,
        "alpha": alpha,
        "r2": _stats(r2),
        "mae": _stats(mae),
    }
