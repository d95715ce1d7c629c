"""Monitoring metrics against hand-computed values: collapse gives rank 1 and zero spread."""

from __future__ import annotations

import math

import numpy as np
import torch

from biofm.ssl.monitor import effective_rank, feature_std


def _naive_rankme(x: np.ndarray) -> float:
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(-(p * np.log(p)).sum()))


def test_effective_rank_matches_reference_and_extremes() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    assert abs(effective_rank(x) - _naive_rankme(x.numpy())) < 1e-3
    line = torch.randn(64, 1, generator=g) * torch.randn(1, 16, generator=g)
    assert effective_rank(line) < 1.01
    # k equal, orthogonal directions: rank k
    eye = torch.cat([torch.eye(4)] * 8)
    assert abs(effective_rank(eye) - 4.0) < 1e-3


def test_feature_std_zero_for_collapse_and_positive_for_spread() -> None:
    same = torch.ones(32, 8) * torch.randn(1, 8)
    assert feature_std(same) < 1e-6
    spread = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    assert 0.25 < feature_std(spread) < 0.45  # about 1 / sqrt(8) = 0.354 on the sphere
    assert math.isnan(feature_std(torch.ones(1, 8)))
