"""Fréchet distance, KID and FD∞ against reference formulas and known behaviour."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from biofm.core.errors import BadInputError, ConfigError
from biofm.eval.frechet import (
    FeatureStats,
    check_compatible,
    conditional_fd,
    fd_from_stats,
    fd_infinity,
    fingerprint,
    frechet_distance,
    kid,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The pytorch-fid formula: scipy ``sqrtm`` of Σ1Σ2 with its eps retry and imag check."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [4, 32, 128])
def test_matches_scipy_sqrtm_reference(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    ours, ref = frechet_distance(mu1, s1, mu2, s2), _scipy_fd(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    # the eigenvalue formula used by torchmetrics / torch-fidelity agrees too
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    other = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert ours == pytest.approx(other, rel=1e-6)


def test_closed_form_for_diagonal_covariances() -> None:
    rng = np.random.default_rng(1)
    d = 20
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_zero_for_identical_statistics_and_permutation_invariant() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 24)) @ rng.standard_normal((24, 24))
    a = FeatureStats.from_features(x)
    b = FeatureStats.from_features(x[rng.permutation(len(x))])
    assert abs(fd_from_stats(a, a)) < 1e-9
    assert abs(fd_from_stats(a, b)) < 1e-9
    y = rng.standard_normal((500, 24)) + 0.3
    c = FeatureStats.from_features(y)
    d = FeatureStats.from_features(y[::-1])
    assert fd_from_stats(a, c) == pytest.approx(fd_from_stats(b, d), rel=1e-10)


def test_streaming_and_chan_merge_equal_one_pass() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 16)) * 5 + 100  # large offset: naive sums lose digits
    one = FeatureStats.from_features(x)
    np.testing.assert_allclose(one.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(one.cov, np.cov(x, rowvar=False), rtol=1e-10)
    streamed = FeatureStats(16)
    for chunk in np.array_split(x, 7):
        streamed.update(chunk)
    halves = [FeatureStats.from_features(p) for p in (x[:313], x[313:])]
    merged = halves[0].merge(halves[1])
    assert merged.n == streamed.n == one.n == 1000
    np.testing.assert_allclose(merged.mean, one.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.cov, one.cov, rtol=1e-10)
    np.testing.assert_allclose(streamed.cov, one.cov, rtol=1e-10)
    assert merged.all_reduce() is merged  # one process: identity


def test_kid_zero_for_same_distribution_positive_when_shifted() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((800, 16)), rng.standard_normal((800, 16))
    mean, std = kid(a, b, n_subsets=30, subset_size=200)
    assert abs(mean) < 3 * std / np.sqrt(30) + 1e-3
    shifted_mean, shifted_std = kid(a, b + 0.5, n_subsets=30, subset_size=200)
    assert shifted_mean > 10 * max(abs(mean), shifted_std / np.sqrt(30))
    with pytest.raises(BadInputError, match="subset_size <= 800"):
        kid(a, b, subset_size=1000)


def test_sample_size_bias_of_fd_absent_in_fd_infinity_and_kid() -> None:
    rng = np.random.default_rng(5)
    d = 16
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((5000, d)) @ mix
    y = rng.standard_normal((5000, d)) @ mix
    fd_small = _fd(x[:500], y[:500])
    fd_large = _fd(x, y)
    assert fd_small > 3 * fd_large > 0  # FD of one distribution shrinks with N (bias ~ 1/N)
    inf = fd_infinity(x, y, num_points=15)
    assert len(inf["points"]) == 15 and inf["points"][0][0] == 500
    assert inf["slope"] > 0
    assert abs(inf["intercept"]) < 0.1 * fd_small  # the 1/N bias is extrapolated away
    mean, std = kid(x, y, n_subsets=50, subset_size=500)
    assert abs(mean) < 3 * std


def _fd(x: np.ndarray, y: np.ndarray) -> float:
    return fd_from_stats(FeatureStats.from_features(x), FeatureStats.from_features(y))


def test_rank_deficient_warns() -> None:
    rng = np.random.default_rng(6)
    a = FeatureStats.from_features(rng.standard_normal((10, 20)))
    with pytest.warns(RuntimeWarning, match="rank-deficient"):
        fd_from_stats(a, a)
    b = FeatureStats.from_features(rng.standard_normal((50, 20)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd_from_stats(b, b)


def test_conditional_fd_with_bootstrap_interval() -> None:
    rng = np.random.default_rng(7)
    real = rng.standard_normal((300, 4))
    fake = rng.standard_normal((300, 4))
    conds = np.repeat(["a", "b", "c"], 100)
    fake[conds == "c"] += 1.0
    out = conditional_fd(real, conds, fake, conds, n_boot=50)
    assert set(out["per_condition"]) == {"a", "b", "c"}
    assert out["per_condition"]["c"] > 5 * out["per_condition"]["a"]
    assert out["ci"][0] <= out["mean"] <= out["ci"][1]
    assert out["mean"] == pytest.approx(np.mean(list(out["per_condition"].values())))
    with pytest.raises(BadInputError, match="condition"):
        conditional_fd(real, conds, fake, np.repeat(["x", "y", "z"], 100), n_boot=5)


def _meta(model: str, channels: list[str], crop: int = 64) -> dict[str, object]:
    pre = {"channels": channels, "crop": crop, "scaling": {"lo": [0.0], "hi": [1.0]}}
    return {"model_sha256": model, "preprocessing": pre, "fingerprint": fingerprint(model, pre)}


def test_fingerprints_refuse_mismatches() -> None:
    a = _meta("aaa", ["DNA", "RNA"])
    check_compatible(a, _meta("aaa", ["DNA", "RNA"]))
    with pytest.raises(ConfigError, match="model"):
        check_compatible(a, _meta("bbb", ["DNA", "RNA"]))
    with pytest.raises(ConfigError, match=r"channels.*Fix: present the same channels"):
        check_compatible(a, _meta("aaa", ["RNA", "DNA"]))
    with pytest.raises(ConfigError, match="crop size"):
        check_compatible(a, _meta("aaa", ["DNA", "RNA"], crop=32))


def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    stats = FeatureStats.from_features(rng.standard_normal((200, 8)))
    meta = _meta("aaa", ["DNA"])
    path = stats.save(tmp_path / "ref.npz", meta)
    loaded, meta2 = FeatureStats.load(path)
    assert loaded.n == 200 and loaded.dims == 8
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    assert meta2["fingerprint"] == meta["fingerprint"]
    with np.load(path) as z:
        assert set(z.files) >= {"mu", "sigma", "n", "dims", "meta"}
    with pytest.raises(BadInputError, match=r"\.npz"):
        stats.save(tmp_path / "ref.txt", meta)


def _rank_stats(rank: int, world: int, port: int, x: np.ndarray, out: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        part = np.array_split(x, [350])[rank]  # unequal shards
        stats = FeatureStats.from_features(part).all_reduce()
        np.savez(f"{out}_{rank}.npz", n=stats.n, mean=stats.mean, cov=stats.cov)
    finally:
        tdist.destroy_process_group()


def test_all_reduce_over_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    rng = np.random.default_rng(9)
    x = rng.standard_normal((1000, 12)) * 3 + 7
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_stats, args=(2, port, x, str(tmp_path / "r")), nprocs=2, join=True)
    one = FeatureStats.from_features(x)
    for rank in range(2):
        with np.load(tmp_path / f"r_{rank}.npz") as z:
            assert int(z["n"]) == 1000
            np.testing.assert_allclose(z["mean"], one.mean, rtol=1e-12)
            np.testing.assert_allclose(z["cov"], one.cov, rtol=1e-10)
