"""Linear probes: separable classes and a linear target are recovered; noise is not; grouped
folds keep near-duplicates out of the test fold; bad input gives errors naming the fix."""

from __future__ import annotations

import numpy as np
import pytest

from biofm.core.errors import BadInputError
from biofm.eval.linear import linear_classification, linear_regression


def test_classification_separable_vs_noise() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 8))
    good = linear_classification(x + 4 * np.eye(8)[y], y)
    noise = linear_classification(x, y)
    assert good["balanced_accuracy"]["mean"] > 0.95 and good["accuracy"]["mean"] > 0.95
    assert noise["balanced_accuracy"]["mean"] < 0.6
    assert good["n_classes"] == 3 and len(good["macro_f1"]["folds"]) == 5
    assert good["macro_f1"]["std"] == pytest.approx(np.std(good["macro_f1"]["folds"]))
    assert good["grouped"] is False


def _leaky() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wells of near-duplicate images: the features identify the well, not the class."""
    rng = np.random.default_rng(2)
    wells = np.repeat(np.arange(12), 5)
    y = wells % 3
    x = rng.normal(size=(12, 16))[wells] + 0.01 * rng.normal(size=(60, 16))
    return x, y, wells


def test_grouped_folds_stop_near_duplicate_leakage() -> None:
    x, y, wells = _leaky()
    leaky = linear_classification(x, y, n_splits=4)
    grouped = linear_classification(x, y, groups=wells, n_splits=4)
    assert leaky["accuracy"]["mean"] > 0.95
    assert grouped["grouped"] is True and grouped["accuracy"]["mean"] < 0.7


def test_classification_errors() -> None:
    x, y, wells = _leaky()
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(BadInputError, match=r"NaN/inf.*re-embed"):
        linear_classification(bad, y)
    with (
        pytest.warns(UserWarning, match="single sample"),
        pytest.raises(BadInputError, match="at least two classes of 2\\+ samples"),
    ):
        linear_classification(x, np.arange(60))  # one sample per class
    with pytest.raises(BadInputError, match=r"labels follow the groups.*drop --group"):
        linear_classification(x, wells % 2, groups=wells % 2, n_splits=2)


def test_regression_recovers_linear_target_and_drops_nan() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=100)
    y[:3] = np.nan
    out = linear_regression(x, y)
    assert out["n_samples"] == 97 and out["n_dropped_samples"] == 3 and out["r2"]["mean"] > 0.95
    assert 0 < out["mae"]["mean"] < 0.2 and len(out["mae"]["folds"]) == 5
    assert linear_regression(x, rng.normal(size=100))["r2"]["mean"] < 0.1
    with pytest.raises(BadInputError, match="one target value"):
        linear_regression(x, y[:10])


def test_grouped_regression_and_errors() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    y = x[:, 0] * 2
    with pytest.warns(UserWarning, match="reducing folds from 5 to 4"):
        out = linear_regression(x, y, groups=np.repeat(np.arange(4), 10))
    assert out["grouped"] is True and out["n_splits"] == 4 and out["r2"]["mean"] > 0.9
    with pytest.raises(BadInputError, match="one group"):
        linear_regression(x, y, groups=np.zeros(40))
    with pytest.raises(BadInputError, match="numeric target"):
        linear_regression(x, np.array(["a"] * 40))
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(BadInputError, match="NaN/inf"):
        linear_regression(bad, y)
    with pytest.raises(BadInputError, match="fewer folds"):
        linear_regression(x[:6], y[:6])
