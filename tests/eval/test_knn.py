"""Nearest-neighbour probes against brute-force references, and on data with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biofm.core.errors import BadInputError
from biofm.eval.knn import evaluate_knn, knn_top1, one_nn_macro_f1, prepare


def _naive_cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def _naive_macro_f1(true: list[int], pred: list[int], classes: list[int]) -> float:
    scores = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(true, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(true, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(true, pred, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def _naive_fold_scores(emb: np.ndarray, y: np.ndarray, splits: list, k: int, t: float) -> tuple:
    rows = emb.tolist()
    classes = sorted(set(y.tolist()))
    f1s, accs = [], []
    for train, test in splits:
        pred1, predk = [], []
        for i in test:
            sims = [(_naive_cos(rows[i], rows[j]), j) for j in train]
            best = max(range(len(sims)), key=lambda n: sims[n][0])
            pred1.append(int(y[sims[best][1]]))
            votes: dict[int, float] = {}
            for s, j in sorted(sims, key=lambda p: -p[0])[:k]:
                votes[int(y[j])] = votes.get(int(y[j]), 0.0) + math.exp(s / t)
            predk.append(max(votes, key=lambda c: votes[c]))
        true = [int(y[i]) for i in test]
        f1s.append(_naive_macro_f1(true, pred1, classes))
        accs.append(sum(p == q for p, q in zip(predk, true, strict=True)) / len(true))
    return f1s, accs


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_naive_reference(k: int) -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(60, 8)) * rng.uniform(0.5, 3, size=(60, 1))
    y = rng.integers(0, 3, size=60)
    p = prepare(emb, y, n_splits=4, seed=3)
    f1s, accs = _naive_fold_scores(emb, p.y, p.splits, k, 0.07)
    f1 = one_nn_macro_f1(emb, y, n_splits=4, seed=3)
    acc = knn_top1(emb, y, k=k, n_splits=4, seed=3)
    np.testing.assert_allclose(f1["folds"], f1s, atol=1e-9)
    np.testing.assert_allclose(acc["folds"], accs, atol=1e-9)
    assert f1["mean"] == pytest.approx(np.mean(f1s))
    assert acc["std"] == pytest.approx(np.std(accs))


def test_grouped_folds_keep_groups_apart_and_match_reference() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(48, 6))
    y = np.repeat([0, 1, 2], 16)
    groups = np.tile(np.arange(8), 6)
    p = prepare(emb, y, groups=groups, n_splits=4)
    assert p.grouped and len(p.splits) == 4
    for train, test in p.splits:
        assert not set(groups[train]) & set(groups[test])
    f1s, accs = _naive_fold_scores(emb, p.y, p.splits, 5, 0.07)
    res = evaluate_knn(emb, y, groups=groups, k=5, n_splits=4)
    np.testing.assert_allclose(res["one_nn_macro_f1"]["folds"], f1s, atol=1e-9)
    np.testing.assert_allclose(res["knn_top1"]["folds"], accs, atol=1e-9)


def test_separable_clusters_score_one() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    y = np.repeat(np.arange(4), 25)
    emb = centres[y] + rng.normal(scale=0.1, size=(100, 16))
    res = evaluate_knn(emb, y)
    assert res["one_nn_macro_f1"]["mean"] == pytest.approx(1.0)
    assert res["knn_top1"]["mean"] == pytest.approx(1.0)
    assert (res["n_samples"], res["n_classes"], res["n_splits"]) == (100, 4, 5)


def test_random_labels_are_at_chance() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(800, 32))
    y = rng.integers(0, 4, size=800)
    res = evaluate_knn(emb, y)
    assert abs(res["knn_top1"]["mean"] - 0.25) < 0.06
    assert abs(res["one_nn_macro_f1"]["mean"] - 0.25) < 0.06


def test_string_labels_and_scale_invariance() -> None:
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(40, 5))
    y = np.array(["a", "b"] * 20)
    a = evaluate_knn(emb, y, n_splits=3)
    b = evaluate_knn(emb * 7.5, y, n_splits=3)
    assert a["knn_top1"]["folds"] == b["knn_top1"]["folds"]


def test_singletons_dropped_and_folds_reduced() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(13, 4))
    y = np.array([0] * 6 + [1] * 3 + [2] * 3 + [9])
    with pytest.warns(UserWarning) as record:
        res = evaluate_knn(emb, y, n_splits=5)
    messages = " ".join(str(w.message) for w in record)
    assert "single sample" in messages and "reducing folds from 5 to 3" in messages
    assert res["dropped_classes"] == [9]
    assert (res["n_samples"], res["n_classes"], res["n_splits"]) == (12, 3, 3)


def test_errors_name_the_fix() -> None:
    emb = np.ones((6, 3))
    with pytest.raises(BadInputError, match="at least two classes"):
        evaluate_knn(emb, [0] * 6)
    bad = np.random.default_rng(0).normal(size=(6, 3))
    bad[2, 1] = np.nan
    with pytest.raises(BadInputError, match=r"NaN.*Fix: drop"):
        evaluate_knn(bad, [0, 1] * 3)
    with pytest.raises(BadInputError, match="one label per"):
        evaluate_knn(emb, [0, 1])
    with pytest.raises(BadInputError, match="one group"):
        evaluate_knn(emb, [0, 1] * 3, groups=[7] * 6)
    with pytest.raises(BadInputError, match="k >= 1"):
        knn_top1(emb, [0, 1] * 3, k=0, n_splits=2)
