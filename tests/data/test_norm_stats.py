"""Normalisation statistics: fitting per group, scaling that keeps intensity, fall-backs,
files, and refusals of statistics for other channels or models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from biofm.core.errors import BadInputError, BadSampleError, ConfigError
from biofm.core.sample import Sample
from biofm.data.norm_fit import (
    fit_manifest_stats,
    fit_sample_stats,
    resolve_group_column,
    select_rows,
    stats_for_input,
)
from biofm.data.norm_stats import NormStats, StatsFitter
from biofm.data.normalize import NormalizeConfig, normalize_pixels, normalize_sample


def _cell(brightness: float, seed: int, size: int = 64) -> np.ndarray:
    """(2, size, size) uint16: a blob whose DNA brightness is ``brightness`` x the base."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    dna = 100 + brightness * 2000 * blob + rng.normal(0, 5, blob.shape)
    actin = 150 + 800 * blob ** 0.5 + rng.normal(0, 5, blob.shape)
    return np.clip(np.stack([dna, actin]), 0, 65535).astype(np.uint16)


def _samples(plate: str, brightness: list[float], gain: float = 1.0) -> list[Sample]:
    return [Sample((_cell(b, k) * gain).astype(np.uint16), ["DAPI", "actin"],
                   meta={"plate": plate, "id": f"{plate}-{k}"})
            for k, b in enumerate(brightness)]  # fmt: skip


def test_image_scaling_erases_brightness_that_source_scaling_keeps() -> None:
    cells = _samples("p1", [1.0, 2.0] * 4)
    stats = fit_sample_stats(cells, "source", group_by="plate")
    dim, bright = cells[0], cells[1]
    per_image = [normalize_sample(s)[0].mean() for s in (dim, bright)]
    by_source = [normalize_sample(s, stats=stats, group="p1")[0].mean() for s in (dim, bright)]
    assert per_image[1] / per_image[0] == pytest.approx(1.0, abs=0.05)
    assert by_source[1] / by_source[0] > 1.6


def test_source_scope_removes_a_plate_gain_per_group() -> None:
    cells = _samples("p1", [1.0, 2.0] * 4) + _samples("p2", [1.0, 2.0] * 4, gain=2.0)
    stats = fit_sample_stats(cells, "source", group_by="plate")
    assert set(stats.groups) == {"p1", "p2"}
    a = normalize_sample(cells[1], stats=stats, group="p1")
    b = normalize_sample(cells[9], stats=stats, group="p2")  # same cell, plate twice as bright
    assert np.abs(a - b).mean() < 0.02
    ref = fit_sample_stats(cells, "reference")
    assert ref.groups == {} and ref.group_by is None
    ra, rb = (normalize_sample(c, stats=ref)[0].mean() for c in (cells[1], cells[9]))
    assert rb > 1.5 * ra  # one reference keeps the plate difference


def test_controls_only_fit_uses_the_masked_rows() -> None:
    cells = _samples("p1", [1.0] * 4 + [3.0] * 4)
    all_rows = fit_sample_stats(cells, "source", group_by="plate")
    controls = fit_sample_stats(cells, "source", group_by="plate",
                                mask=[True] * 4 + [False] * 4)  # fmt: skip
    assert controls.groups["p1"]["DAPI"][1] < all_rows.groups["p1"]["DAPI"][1]
    assert "4 samples" in controls.fitted_on


def test_small_group_falls_back_to_reference_with_a_warning() -> None:
    cells = _samples("big", [1.0] * 8) + _samples("tiny", [1.0], gain=1.0)
    tiny = Sample(cells[-1].pixels[:, :16, :16].copy(), ["DAPI", "actin"], meta={"plate": "tiny"})
    fitter = StatsFitter("source", 1.0, 99.8, "plate", min_pixels=4096)
    for s in [*cells[:-1], tiny]:
        fitter.add(s.pixels, s.channels, s.meta["plate"])
    stats = fitter.result()
    assert "tiny" not in stats.groups
    with pytest.warns(UserWarning, match="reference statistics"):
        lo, _ = stats.ranges(["DAPI", "actin"], "tiny")
    assert lo[0] == stats.reference["DAPI"][0]
    with pytest.warns(UserWarning, match="reference statistics"):
        assert stats.ranges(["DAPI"], "never-seen") is not None


def test_too_few_pixels_anywhere_falls_back_to_per_image_scaling() -> None:
    s = Sample(_cell(1.0, 0, size=16), ["DAPI", "actin"], meta={"plate": "p"})
    stats = fit_sample_stats([s], "source", group_by="plate")
    assert stats.groups == {}
    with pytest.warns(UserWarning, match="per-image scaling"):
        assert stats.ranges(s.channels, "p") is None
    with pytest.warns(UserWarning):
        out = normalize_sample(s, stats=fit_sample_stats([s], "source", group_by="plate"),
                               group="p")  # fmt: skip
    np.testing.assert_allclose(out, normalize_sample(s))


def test_channels_match_by_name_then_by_stain_else_refused() -> None:
    stats = fit_sample_stats(_samples("p1", [1.0] * 4), "reference")
    lo, _ = stats.ranges(["Hoechst 33342", "actin"])  # same stain as DAPI
    assert lo[0] == stats.reference["DAPI"][0]
    with pytest.raises(BadInputError, match="'GFP' has no normalisation statistics") as err:
        stats.ranges(["DAPI", "GFP"], where="img7")
    assert "fit statistics on images with these channels" in str(err.value)
    assert "img7" in str(err.value)


def test_explicit_ranges_scale_and_blank_images_are_still_refused() -> None:
    px = np.full((2, 8, 8), 50, np.uint16)
    px[0, 0, 0] = 150
    out = normalize_pixels(px, NormalizeConfig(), ranges=(np.array([50.0, 0.0]),
                                                          np.array([150.0, 100.0])))
    assert out[0, 0, 0] == pytest.approx(1.0) and out[1, 0, 0] == pytest.approx(0.5)
    with pytest.raises(BadSampleError, match="no signal"):
        normalize_pixels(np.zeros((2, 8, 8)), ranges=(np.zeros(2), np.ones(2)))
    with pytest.raises(ConfigError, match="scope"):
        NormalizeConfig(scope="plate")


def test_file_round_trip_and_refusals(tmp_path: Path) -> None:
    stats = fit_sample_stats(_samples("p1", [1.0] * 4), "source", group_by="plate")
    path = stats.save(tmp_path / "s.norm.json")
    again = NormStats.load(path)
    assert again.to_dict() == stats.to_dict()
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BadInputError, match="not a biofm normalisation statistics file"):
        NormStats.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(BadInputError, match="is not JSON"):
        NormStats.load(tmp_path / "broken.json")
    with pytest.raises(BadInputError, match="does not exist"):
        NormStats.load(tmp_path / "missing.json")
    d = stats.to_dict()
    del d["low"]
    with pytest.raises(BadInputError, match="malformed"):
        NormStats.from_dict(d)


def test_statistics_for_another_model_or_percentiles_are_refused() -> None:
    stats = fit_sample_stats(_samples("p1", [1.0] * 4), "reference")
    stats.model = "a" * 64
    card = {"normalize": {"low": 1.0, "high": 99.8}}
    stats.check_for(card, "a" * 64)
    with pytest.raises(BadInputError, match="fitted for another model"):
        stats.check_for(card, "b" * 64)
    with pytest.raises(BadInputError, match="percentiles"):
        stats.check_for({"normalize": {"low": 0.5, "high": 99.0}}, None)


def _manifest(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for plate, gain in (("p1", 1.0), ("p2", 2.0)):
        for k, (b, cond) in enumerate([(1.0, "DMSO"), (1.0, "DMSO"), (3.0, "drug"), (3.0, "drug")]):
            path = tmp_path / f"{plate}_{k}.tif"
            tifffile.imwrite(path, (_cell(b, k) * gain).astype(np.uint16))
            rows.append({"id": f"{plate}_{k}", "paths": str(path), "channels": "DAPI;actin",
                         "plate": plate, "compound": cond})
    return pd.DataFrame(rows)


def test_manifest_fit_per_plate_on_controls(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    assert resolve_group_column(df, "auto") == "plate"
    cfg = NormalizeConfig(scope="source")
    stats = fit_manifest_stats(df, cfg, fit_on="compound=DMSO", min_pixels=1024)
    assert stats.group_by == "plate" and set(stats.groups) == {"p1", "p2"}
    hi1, hi2 = stats.groups["p1"]["DAPI"][1], stats.groups["p2"]["DAPI"][1]
    assert hi2 == pytest.approx(2 * hi1, rel=0.05)
    assert "compound=DMSO" in stats.fitted_on


def test_manifest_selection_errors_name_the_fix(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    with pytest.raises(BadInputError, match="COLUMN=VALUE"):
        select_rows(df, "DMSO")
    with pytest.raises(BadInputError, match="no row has compound"):
        select_rows(df, "compound=water")
    with pytest.raises(BadInputError, match="--norm-by"):
        resolve_group_column(df, "batch")
    assert resolve_group_column(df.drop(columns="plate"), "auto") is None


def test_stats_file_with_other_channels_is_refused_before_embedding(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    other = fit_sample_stats([Sample(_cell(1.0, 0), ["GFP", "mCherry"])], "reference")
    other.save(tmp_path / "other.json")
    with pytest.raises(BadInputError, match="'DAPI' has no normalisation statistics"):
        stats_for_input(df, {}, stats_file=tmp_path / "other.json")
    cfg, stats = stats_for_input(df, {}, scope="image")
    assert cfg.scope == "image" and stats is None


def test_a_rare_channel_set_in_a_group_is_still_fitted(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    rare = tmp_path / "bf.tif"
    tifffile.imwrite(rare, _cell(1.0, 9)[:1])
    df = pd.concat([df, pd.DataFrame([{"id": "bf", "paths": str(rare), "channels": "brightfield",
                                       "plate": "p1", "compound": "DMSO"}])])
    stats = fit_manifest_stats(df, NormalizeConfig(scope="source"), per_group=2,
                               min_pixels=1024)  # fmt: skip
    assert "brightfield" in stats.groups["p1"] and "brightfield" not in stats.groups["p2"]
    with pytest.warns(UserWarning, match="no statistics for channel 'brightfield'"):
        assert stats.ranges(["brightfield"], "p2") is not None  # from the reference
