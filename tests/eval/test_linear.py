"""Linear probes: separable classes and a linear target are recovered; noise is not."""

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
    assert good["balanced_accuracy"]["mean"] > 0.95
    assert noise["balanced_accuracy"]["mean"] < 0.6
    assert good["n_classes"] == 3 and len(good["macro_f1"]["per_fold"]) == 5


def test_regression_recovers_linear_target_and_drops_nan() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=100)
    y[:3] = np.nan
    out = linear_regression(x, y)
    assert out["n_samples"] == 97 and out["r2"]["mean"] > 0.95
    assert linear_regression(x, rng.normal(size=100))["r2"]["mean"] < 0.1
    with pytest.raises(BadInputError, match="one target value"):
        linear_regression(x, y[:10])
