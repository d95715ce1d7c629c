"""The offline IDR catalogue, checked against IDR's real catalogue files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from biofm.core.errors import BadInputError
from biofm.idr.catalog import Catalog, load_catalog, parse_dims, resolve_catalog_dir
from tests.idr import idr_catalog_dir


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(idr_catalog_dir())


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(idr_catalog_dir() / "idr_studies.tsv", sep="\t")


def test_one_row_per_container_with_typed_columns(catalog: Catalog, raw: pd.DataFrame) -> None:
    assert len(catalog) == len(raw)
    t = catalog.table
    assert set(t["kind"].dropna()) == {"screen", "experiment"}
    assert t["study_id"].str.fullmatch(r"idr\d{4}").all()
    for col in ("images", "planes", "size_bytes"):
        assert str(t[col].dtype) == "Int64", col
    for col in ("x", "y", "z", "c", "t"):
        assert t[col].dtype == float and t[col].notna().all(), col
    fractional = t[t["study"] == "idr0012-fuchs-cellmorph"].iloc[0]
    assert (fractional["z"], fractional["c"]) == (1.13, 2.9)


def test_idr0036_matches_the_raw_row(catalog: Catalog, raw: pd.DataFrame) -> None:
    row = raw[raw["Study"] == "idr0036-gustafsdottir-cellpainting"].iloc[0]
    x, y, _z, c, _t = (float(v) for v in row["Avg. Image Dim (XYZCT)"].split(" x "))
    ours = catalog.filter(study="idr0036").table.iloc[0]
    assert (ours["images"], ours["c"], ours["x"], ours["y"]) == (row["5D Images"], c, x, y)
    assert (ours["images"], ours["c"]) == (69120, 5)
    assert ours["size_bytes"] == row["Size"] and ours["sample_type"] == "cell"
    assert ours["license"] == "CC0 1.0" and ours["organism"] == "Homo sapiens"
    assert ours["imaging_method"] == "fluorescence microscopy"
    assert ours["n_channel_labels"] >= 5


def test_parse_dims_handles_missing() -> None:
    texts = ["696 x 520 x  1 x 5 x 1", None, "n/a", "647.2 x 498.0 x 1 x 4 x 1"]
    dims = parse_dims(pd.Series(texts))
    assert dims.iloc[0].tolist() == [696, 520, 1, 5, 1]
    assert dims.iloc[3].tolist() == [647.2, 498.0, 1, 4, 1]
    assert dims.iloc[1:3].isna().all().all()


def test_filter_min_channels(catalog: Catalog) -> None:
    five = catalog.filter(min_channels=5)
    assert len(five) and (five.table["c"] >= 5).all()
    assert {"idr0016", "idr0036", "idr0080"} <= set(five.table["study_id"])
    few = catalog.filter(max_channels=1)
    assert len(few) and (few.table["c"] <= 1).all()


def test_filter_text_is_case_insensitive_and_combined(catalog: Catalog) -> None:
    sel = catalog.filter(sample_type="CELL", organism="homo", kind="Screen",
                         imaging_method="FLUORESCENCE", min_images=50_000, max_size_tb=5.0)
    t = sel.table
    assert len(sel) and (t["kind"] == "screen").all() and (t["sample_type"] == "cell").all()
    assert (t["images"] >= 50_000).all() and (t["size_tb"] <= 5.0).all()
    assert t["organism"].str.contains("Homo").all()
    assert "idr0036" in set(t["study_id"])
    kinds = len(catalog.filter(kind="experiment")) + len(catalog.filter(kind="screen"))
    assert kinds == len(catalog)


def test_show_screen_study_lists_plates_and_channels(catalog: Catalog) -> None:
    info = catalog.show("idr0036")
    assert info["study"] == "idr0036-gustafsdottir-cellpainting"
    assert info["annotations"]["license"] == "CC0 1.0"
    plates = info["plates"]["screenA"]
    assert plates["count"] == 20 and len(plates["plates"]) == 10
    channels = " ".join(info["channels"]["screenA"]).lower()
    assert all(s in channels for s in ("hoechst", "mitotracker", "phalloidin", "syto 14"))
    assert info["downloads"] and info["downloads"][0]["is_zarr"] == "True"


def test_show_uses_plate_details_with_ids(catalog: Catalog) -> None:
    info = catalog.show("idr0001-graml-sysgro", max_plates=3)
    plates = info["plates"]["screenA"]
    assert plates["count"] == 192 and plates["plates"][0]["id"] == "2551"
    assert "GFP" in plates["channel_strings"][0]


def test_unknown_study_suggests_close_match(catalog: Catalog) -> None:
    with pytest.raises(BadInputError, match="idr0036"):
        catalog.show("idr036")


def test_missing_catalogue_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIOFM_IDR_CATALOG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="--catalog"):
        resolve_catalog_dir()
    with pytest.raises(BadInputError, match=r"idr_studies\.tsv"):
        load_catalog(tmp_path)


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOFM_IDR_CATALOG", str(idr_catalog_dir()))
    assert resolve_catalog_dir() == idr_catalog_dir()
