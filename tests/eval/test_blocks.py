"""Per-block probe: one score per block on shared folds, and the best block."""

from __future__ import annotations

import numpy as np
import pytest

from biofm.core.errors import BadInputError
from biofm.eval.blocks import block_probe


def _blocks() -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    groups = np.tile(np.arange(5), 12)
    signal = 5 * np.eye(8)[y]
    feats = {
        0: rng.normal(size=(60, 8)),  # noise
        4: rng.normal(size=(60, 8)) + signal,  # separable
        2: rng.normal(size=(60, 6)) + 0.15 * signal[:, :6],  # weak
    }
    return feats, y, groups


@pytest.mark.parametrize("probe", ["knn", "linear"])
def test_best_block_is_the_separable_one(probe: str) -> None:
    feats, y, groups = _blocks()
    res = block_probe(feats, y, groups=groups, probe=probe, n_splits=3, k=5)
    assert [r["block"] for r in res["blocks"]] == [0, 2, 4]
    assert res["best_block"] == 4 and res["best_score"] > 0.9
    metric = res["metric"]
    scores = {r["block"]: r[metric]["mean"] for r in res["blocks"]}
    assert scores[0] < 0.6 < scores[4]
    assert res["grouped"] is True and res["n_splits"] == 3
    assert all(len(r[metric]["folds"]) == 3 for r in res["blocks"])
    assert res["blocks"][1]["dim"] == 6


def test_block_probe_errors() -> None:
    feats, y, _ = _blocks()
    with pytest.raises(BadInputError, match="--blocks"):
        block_probe({}, y)
    with pytest.raises(BadInputError, match="same rows"):
        block_probe({0: feats[0], 1: feats[4][:10]}, y)
    with pytest.raises(BadInputError, match="knn"):
        block_probe(feats, y, probe="svm")
    bad = {0: feats[0].copy()}
    bad[0][3, 1] = np.nan
    with pytest.raises(BadInputError, match="NaN/inf"):
        block_probe(bad, y)
