"""Profiling metrics (copairs mAP) and control-fitted batch corrections, on known structure."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biofm.core.errors import BadInputError, ConfigError, MissingExtraError
from biofm.eval.batch_correction import center_scale, correct, sphere, tvn

pytest.importorskip("copairs")

from biofm.eval.profiling import (
    activity_average_precision,
    aggregate_profiles,
    average_precision_ranking,
    phenotypic_activity,
    profile_report,
    replicate_average_precision,
    replicate_map,
)

NULL = 2000  # small permutation null: p-values down to ~5e-4, fast


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """copairs caches its null distributions here instead of ~/.copairs."""
    return tmp_path_factory.mktemp("copairs_cache")


def synthetic(
    n_plates: int = 4,
    n_active: int = 5,
    n_controls: int = 24,
    dim: int = 12,
    plate_effect: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One well per perturbation per plate, controls on every plate, one inactive perturbation.

    Active perturbations add a distinct direction; the inactive one is drawn like the controls.
    Plates add a random offset and a per-feature gain (scaled by ``plate_effect``).
    """
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_active, dim))
    directions *= 2.5 / np.linalg.norm(directions, axis=1, keepdims=True)
    rows, x = [], []
    for p in range(n_plates):
        offset = rng.normal(size=dim) * 3 * plate_effect
        gain = np.exp(rng.normal(size=dim) * 0.4 * plate_effect)
        labels = [f"cmpd{k}" for k in range(n_active)] + ["inactive"] + ["DMSO"] * n_controls
        for i, label in enumerate(labels):
            v = rng.normal(size=dim) * 0.3
            if i < n_active:
                v += directions[i]
            x.append(v * gain + offset)
            rows.append({"plate": f"P{p}", "well": f"W{i:02d}", "pert": label})
    return np.asarray(x), pd.DataFrame(rows)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (b @ a) / (np.linalg.norm(b, axis=1) * np.linalg.norm(a))


# ---------------------------------------------------------------- average precision reference


def test_numpy_ap_known_values() -> None:
    assert average_precision_ranking([0.9, 0.5, 0.1], [True, False, True]) == pytest.approx(
        (1 + 2 / 3) / 2
    )
    assert average_precision_ranking([0.1, 0.2, 0.3], [False, False, True]) == 1.0
    assert average_precision_ranking([0.3, 0.2, 0.1], [False, False, True]) == pytest.approx(1 / 3)
    with pytest.raises(BadInputError, match="no positive"):
        average_precision_ranking([0.1, 0.2], [False, False])


def test_copairs_replicate_ap_equals_numpy_reference() -> None:
    x, meta = synthetic(n_controls=6, seed=3)
    ap = replicate_average_precision(x, meta, "pert", "DMSO")
    assert set(ap["pert"]) == {f"cmpd{k}" for k in range(5)} | {"inactive"}
    queries = meta.index[meta["pert"] != "DMSO"]
    for j, i in enumerate(queries):
        others = np.arange(len(x)) != i
        sims = _cosine(x[i], x[others])
        relevant = (meta["pert"] == meta.loc[i, "pert"]).to_numpy()[others]
        expected = average_precision_ranking(sims, relevant)
        assert ap.loc[j, "average_precision"] == pytest.approx(expected, abs=1e-9)
        assert ap.loc[j, "n_pos_pairs"] == relevant.sum()
        assert ap.loc[j, "n_total_pairs"] == others.sum()


def test_copairs_activity_ap_ranks_replicates_among_controls_only() -> None:
    x, meta = synthetic(n_controls=6, seed=4)
    ap = activity_average_precision(x, meta, "pert", "DMSO")
    controls = (meta["pert"] == "DMSO").to_numpy()
    for j, i in enumerate(meta.index[~controls]):
        same = (meta["pert"] == meta.loc[i, "pert"]).to_numpy()
        candidates = (same | controls) & (np.arange(len(x)) != i)
        expected = average_precision_ranking(_cosine(x[i], x[candidates]), same[candidates])
        assert ap.loc[j, "average_precision"] == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- metrics on known structure


def test_replicate_map_high_and_above_shuffled_labels(cache: Path) -> None:
    x, meta = synthetic(seed=1)
    table = replicate_map(x, meta, "pert", "DMSO", null_size=NULL, cache_dir=cache)
    active = table[table["pert"] != "inactive"]
    assert (active["mean_average_precision"] > 0.8).all()
    assert active["below_corrected_p"].all()
    assert {"p_value", "corrected_p_value", "below_p", "n_profiles"} <= set(table.columns)
    assert (table["n_profiles"] == 4).all()
    assert table.attrs["fraction_retrieved"] >= 5 / 6
    shuffled = meta.assign(pert=np.random.default_rng(0).permutation(meta["pert"].to_numpy()))
    null = replicate_map(x, shuffled, "pert", "DMSO", null_size=NULL, cache_dir=cache)
    assert null.attrs["mean_map"] < table.attrs["mean_map"] - 0.4


def test_phenotypic_activity_flags_active_not_inactive(cache: Path) -> None:
    x, meta = synthetic(seed=2)
    table = phenotypic_activity(x, meta, "pert", "DMSO", null_size=NULL, cache_dir=cache)
    flags = dict(zip(table["pert"], table["below_corrected_p"], strict=True))
    assert all(flags[f"cmpd{k}"] for k in range(5))
    assert not flags["inactive"]
    maps = dict(zip(table["pert"], table["mean_average_precision"], strict=True))
    assert maps["inactive"] < 0.5 < min(maps[f"cmpd{k}"] for k in range(5))
    per_plate = phenotypic_activity(
        x, meta, "pert", "DMSO", batch_col="plate", null_size=NULL, cache_dir=cache
    )
    assert per_plate.set_index("pert").loc["cmpd0", "below_corrected_p"]


def test_plate_effects_hurt_and_control_fitted_correction_restores(cache: Path) -> None:
    x, meta = synthetic(plate_effect=1.0, seed=5)
    methods = ("none", "center_scale", "sphere", "tvn", "tvn_coral")
    report = profile_report(
        x, meta, "pert", "DMSO", "plate", methods=methods, null_size=NULL, cache_dir=cache
    ).set_index("method")
    clean = replicate_map(*synthetic(seed=5), "pert", "DMSO", null_size=NULL, cache_dir=cache)
    before = report.loc["none", "replicate_map"]
    assert before < clean.attrs["mean_map"] - 0.3
    for method in methods[1:]:
        assert report.loc[method, "replicate_map"] > before + 0.3, method
        assert report.loc[method, "replicate_fraction_retrieved"] >= 5 / 6, method
        assert report.loc[method, "activity_map"] > report.loc["none", "activity_map"], method
    assert report.loc["center_scale", "activity_fraction_retrieved"] >= 5 / 6
    assert list(report.columns) == [
        "replicate_map",
        "replicate_fraction_retrieved",
        "activity_map",
        "activity_fraction_retrieved",
        "n_perturbations",
        "dim",
    ]


# ---------------------------------------------------------------- corrections


def test_center_scale_controls_zero_mean_unit_variance_per_plate() -> None:
    x, meta = synthetic(plate_effect=1.0, seed=6)
    controls = (meta["pert"] == "DMSO").to_numpy()
    y = center_scale(x, meta, "plate", controls)
    assert y.shape == x.shape and y is not x
    for plate in meta["plate"].unique():
        c = y[controls & (meta["plate"] == plate).to_numpy()]
        np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-10)
        np.testing.assert_allclose(c.std(axis=0), 1, atol=1e-10)
    const = x.copy()
    const[:, 0] = 7.0
    assert np.allclose(center_scale(const, meta, "plate", controls)[:, 0], 0)


def test_sphere_makes_control_covariance_identity() -> None:
    x, meta = synthetic(plate_effect=1.0, n_controls=40, dim=8, seed=7)
    x[:, 1] += 0.8 * x[:, 0]  # correlated features
    controls = (meta["pert"] == "DMSO").to_numpy()
    y = sphere(x, meta, "plate", controls, epsilon=1e-9)
    for plate in meta["plate"].unique():
        c = y[controls & (meta["plate"] == plate).to_numpy()]
        np.testing.assert_allclose(np.cov(c, rowvar=False, ddof=0), np.eye(8), atol=1e-5)
        np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-8)
    few = np.zeros(len(x), dtype=bool)
    few[np.flatnonzero(controls)[:5]] = True  # 5 controls for 8 dimensions
    with pytest.warns(UserWarning, match="singular"):
        sphere(x, meta, None, few)


def test_tvn_whitens_controls_and_keeps_their_span() -> None:
    x, meta = synthetic(plate_effect=1.0, n_controls=6, dim=40, seed=8)
    controls = (meta["pert"] == "DMSO").to_numpy()
    y = tvn(x, meta, "plate", controls)
    assert y.shape == (len(x), controls.sum() - 4)  # rank: controls minus one mean per plate
    for plate in meta["plate"].unique():
        c = y[controls & (meta["plate"] == plate).to_numpy()]
        np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-8)
        np.testing.assert_allclose(c.std(axis=0), 1, atol=1e-8)
    assert tvn(x, meta, "plate", controls, n_components=5).shape[1] == 5
    coral = correct(x, meta, "tvn_coral", "plate", controls, n_components=5)
    assert coral.shape == (len(x), 5) and np.isfinite(coral).all()
    np.testing.assert_array_equal(correct(x, meta, "none", "plate", controls), x)


def test_plate_without_controls_is_an_error_naming_the_fix(cache: Path) -> None:
    x, meta = synthetic(seed=9)
    meta = meta.copy()
    meta.loc[(meta["plate"] == "P2") & (meta["pert"] == "DMSO"), "pert"] = "other"
    controls = (meta["pert"] == "DMSO").to_numpy()
    for fn in (center_scale, sphere, tvn):
        with pytest.raises(
            BadInputError, match=r"plate='P2' has no control rows.*Fix: add control"
        ):
            fn(x, meta, "plate", controls)
    with pytest.raises(BadInputError, match="no control rows"):
        profile_report(
            x,
            meta,
            "pert",
            "DMSO",
            "plate",
            methods=("center_scale",),
            null_size=NULL,
            cache_dir=cache,
        )
    x, meta = synthetic(seed=9)
    one = np.array(meta["pert"] == "DMSO")
    one[np.flatnonzero(one & (meta["plate"] == "P1").to_numpy())[1:]] = False
    with pytest.raises(BadInputError, match=r"plate='P1' has only 1 control row"):
        center_scale(x, meta, "plate", one)
    center_scale(x, meta, None, controls)  # pooled controls: fine


def test_input_errors(cache: Path) -> None:
    x, meta = synthetic(seed=10)
    controls = (meta["pert"] == "DMSO").to_numpy()
    with pytest.raises(ConfigError, match="unknown correction"):
        correct(x, meta, "combat", "plate", controls)
    with pytest.raises(BadInputError, match="batch column 'batch'"):
        center_scale(x, meta, "batch", controls)
    with pytest.raises(BadInputError, match="one boolean per row"):
        center_scale(x, meta, "plate", controls[:-1])
    with pytest.raises(BadInputError, match="no row has pert == 'dmso'"):
        replicate_map(x, meta, "pert", "dmso", null_size=NULL, cache_dir=cache)
    with pytest.raises(BadInputError, match="needs controls"):
        phenotypic_activity(x, meta, "pert", None, null_size=NULL, cache_dir=cache)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        replicate_map(bad, meta, "pert", "DMSO", null_size=NULL, cache_dir=cache)
    single = meta[meta["plate"] == "P0"]
    with pytest.raises(BadInputError, match="at least two profiles"):
        replicate_map(x[single.index], single, "pert", "DMSO", null_size=NULL, cache_dir=cache)


def test_missing_copairs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "copairs.map", None)
    x, meta = synthetic(seed=11)
    with pytest.raises(MissingExtraError, match=r"biofm\[profiling\]"):
        replicate_map(x, meta, "pert", "DMSO")


def test_aggregate_profiles_mean_and_median() -> None:
    emb = np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [5.0, 1.0], [7.0, 3.0], [0.0, 9.0]])
    meta = pd.DataFrame(
        {
            "plate": ["A", "A", "A", "B", "B", "B"],
            "well": ["w1", "w1", "w1", "w1", "w1", "w2"],
            "pert": ["x", "x", "x", "y", "y", "z"],
            "cell": [1, 2, 3, 4, 5, 6],
        }
    )
    prof, out = aggregate_profiles(emb, meta, ["plate", "well"])
    np.testing.assert_allclose(prof, [[14 / 3, 4.0], [6.0, 2.0], [0.0, 9.0]])
    assert list(out.columns) == ["plate", "well", "pert", "n_aggregated"]
    assert out["pert"].tolist() == ["x", "y", "z"]
    assert out["n_aggregated"].tolist() == [3, 2, 1]
    med, _ = aggregate_profiles(emb, meta, ["plate", "well"], method="median")
    np.testing.assert_allclose(med[0], [3.0, 2.0])
    with pytest.raises(ConfigError):
        aggregate_profiles(emb, meta, ["plate"], method="max")
    with pytest.raises(BadInputError, match="not metadata columns"):
        aggregate_profiles(emb, meta, ["site"])


# ---------------------------------------------------------------- real CellProfiler features


def test_real_cellprofiler_cells_retrieve_their_own_plate(shared_data: Path, cache: Path) -> None:
    """Cells of three real plates (5 each): shape features retrieve cells of the same plate/field
    far above a label-shuffled baseline."""
    files = sorted((shared_data / "cellpainting_fields").glob("*/*.parquet"))
    if len(files) < 3:
        pytest.skip("the three CellProfiler parquets are not there")
    tables = [pd.read_parquet(f) for f in files]
    numeric = [
        {c for c in t.columns if "Metadata" not in c and t[c].dtype.kind == "f"} for t in tables
    ]
    feats = sorted(
        c
        for c in set.intersection(*numeric)
        if not any(s in c for s in ("Center", "Location", "Orientation"))
    )
    assert len(feats) > 50
    x = np.concatenate([t[feats].to_numpy(np.float64) for t in tables])
    meta = pd.DataFrame(
        {"plate": np.repeat([f.parent.name for f in files], [len(t) for t in tables])}
    )
    x = center_scale(x, meta, None, np.ones(len(x), dtype=bool))  # standardise features
    observed = replicate_average_precision(x, meta, "plate")["average_precision"].mean()
    rng = np.random.default_rng(0)
    shuffled = [
        replicate_average_precision(x, meta.assign(plate=rng.permutation(meta["plate"])), "plate")[
            "average_precision"
        ].mean()
        for _ in range(10)
    ]
    assert observed > np.mean(shuffled) + 0.2
    assert observed > max(shuffled)
    table = replicate_map(x, meta, "plate", null_size=NULL, cache_dir=cache)
    assert table["below_corrected_p"].any()
