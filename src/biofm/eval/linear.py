"""Linear probes on frozen embeddings (scikit-learn, no torch).

- ``linear_classification``: multinomial logistic regression on standardised embeddings,
  balanced accuracy and macro-F1 over the same stratified (grouped) folds as the k-NN probes.
- ``linear_regression``: ridge regression of a numeric target (e.g. log nuclei per image),
  R^2 over K-fold CV.

The regularisation strength is fixed (not tuned per fold) so that probes of different encoders
are compared at the same capacity; both take ``c`` / ``alpha`` to change it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, f1_score, r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from biofm.core.errors import BadInputError
from biofm.eval.knn import prepare


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "per_fold": [float(v) for v in values]}


def linear_classification(emb: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None,
                          n_splits: int = 5, seed: int = 0, c: float = 1.0,
                          max_iter: int = 2000) -> dict[str, Any]:
    """Logistic-regression probe: {"balanced_accuracy", "macro_f1"} mean/std/per-fold."""
    p = prepare(emb, labels, groups, n_splits, seed)
    bal, f1 = [], []
    for train, test in p.splits:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        clf.fit(p.x[train], p.y[train])
        pred = clf.predict(p.x[test])
        bal.append(balanced_accuracy_score(p.y[test], pred))
        f1.append(f1_score(p.y[test], pred, average="macro"))
    return {"n_samples": len(p.y), "n_classes": len(p.classes), "n_splits": len(p.splits),
            "balanced_accuracy": _stats(bal), "macro_f1": _stats(f1), "C": c}


def linear_regression(emb: ArrayLike, target: ArrayLike, n_splits: int = 5, seed: int = 0,
                      alpha: float = 1.0) -> dict[str, Any]:
    """Ridge probe of a numeric target: R^2 mean/std/per-fold (rows with NaN target dropped)."""
    x = np.asarray(emb, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise BadInputError(f"embeddings {x.shape} and target {y.shape} do not match",
                            "pass one target value per embedding row")
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    if len(y) < 2 * n_splits:
        raise BadInputError(f"only {len(y)} rows with a finite target",
                            f"give at least {2 * n_splits} rows or fewer folds")
    scores = []
    for train, test in KFold(n_splits, shuffle=True, random_state=seed).split(x):
        reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        reg.fit(x[train], y[train])
        scores.append(r2_score(y[test], reg.predict(x[test])))
    return {"n_samples": len(y), "n_splits": n_splits, "r2": _stats(scores), "alpha": alpha}
