"""Grouping per-channel files into fields (names only: no file is read here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biofm.core.errors import BadInputError
from biofm.io.filesets import Incomplete, group_files, list_image_files, natural_key


def _touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(path)
    return list_image_files(root)


def _summary(root: Path, pattern: str, incomplete: Incomplete = "skip") -> dict[str, list[str]]:
    grouping = group_files(list_image_files(root), root, pattern, incomplete=incomplete)
    return {f.id: [c for c, _ in f.files] for f in grouping.fields}


def test_natural_sort() -> None:
    assert sorted(["ch10", "ch2", "ch1"], key=natural_key) == ["ch1", "ch2", "ch10"]


def test_phenix(tmp_path: Path) -> None:
    _touch(tmp_path, *[f"r02c03f01p01-ch{c}sk1fk1fl1.tiff" for c in (10, 2, 1)],
           *[f"r02c03f02p01-ch{c}sk1fk1fl1.tiff" for c in (10, 2, 1)])
    grouping = group_files(list_image_files(tmp_path), tmp_path, "phenix")
    assert [f.id for f in grouping.fields] == ["r02c03f01p01sk1", "r02c03f02p01sk1"]
    first = grouping.fields[0]
    assert [c for c, _ in first.files] == ["ch1", "ch2", "ch10"]
    assert first.meta == {"row": "02", "col": "03", "field": "01", "plane": "01",
                          "timepoint": "1", "well": "B03"}


def test_w_preset_guid_forms(tmp_path: Path) -> None:
    guid = "9AA4D9EA-18E4-4354-8C7D-0202029A8048"
    _touch(tmp_path, f"Plt1_C16_w1_[{guid}].tif", f"Plt1_C16_w2_[{guid.lower()}].tif",
           f"mcf_a01_s1_w1{guid.lower()}.tif", f"mcf_a01_s1_w2{guid.lower()}.tif")
    assert _summary(tmp_path, "w") == {"Plt1_C16": ["w1", "w2"], "mcf_a01_1": ["w1", "w2"]}


def test_d_preset(tmp_path: Path) -> None:
    _touch(tmp_path, *[f"AS_09125_050116030001_D03f00d{c}.tif" for c in range(3)],
           "AS_09125_050116030001_D03f01d0.TIF")
    grouping = group_files(list_image_files(tmp_path), tmp_path, "d", incomplete="keep")
    assert {f.id: len(f.files) for f in grouping.fields} == {
        "AS_09125_050116030001_D03_00": 3, "AS_09125_050116030001_D03_01": 1}
    assert grouping.fields[0].meta["well"] == "D03"


def test_suffix_ignores_channel_index_token(tmp_path: Path) -> None:
    _touch(tmp_path, "B7_01_1_3_DAPI_001.tif", "B7_01_2_3_GFP_001.tif", "B7_01_3_3_RFP_001.tif",
           "D6_01_1_2_DAPI_001.tif", "D6_01_2_2_GFP_001.tif", "D6_01_3_2_RFP_001.tif",
           "01_POS002_D.TIF", "01_POS002_F.TIF", "0_1_N_G.png", "0_1_N_R.png")
    fields = _summary(tmp_path, "suffix", incomplete="keep")  # three unrelated sets
    assert fields["B7_01_3"] == ["DAPI", "GFP", "RFP"]
    assert fields["D6_01_2"] == ["DAPI", "GFP", "RFP"]
    assert fields["01_POS002"] == ["D", "F"]
    assert fields["0_1_N"] == ["G", "R"]


def test_folders_and_single(tmp_path: Path) -> None:
    _touch(tmp_path, "site1/Hoechst.tif", "site1/Mito.tif", "site2/Hoechst.tif",
           "site2/Mito.tif")
    assert _summary(tmp_path, "folders") == {"site1": ["Hoechst", "Mito"],
                                             "site2": ["Hoechst", "Mito"]}
    assert _summary(tmp_path, "single") == {
        "site1/Hoechst": [""], "site1/Mito": [""], "site2/Hoechst": [""], "site2/Mito": [""]}


def test_auto_picks_best_and_keeps_the_rest_as_singles(tmp_path: Path) -> None:
    _touch(tmp_path, *[f"AS_1_O0{w}f00d2.TIF" for w in range(1, 4)],
           "--W00001--P00001--Z00000--T00000--cherry.tif")
    grouping = group_files(list_image_files(tmp_path), tmp_path, "auto")
    assert grouping.pattern == "auto:d"
    singles = [f.id for f in grouping.fields if f.single]
    assert singles == ["--W00001--P00001--Z00000--T00000--cherry"]
    assert len(grouping.fields) == 4


def test_regex_with_path_and_metadata(tmp_path: Path) -> None:
    _touch(tmp_path, "plateA/B02_s1_dna.png", "plateA/B02_s1_actin.png")
    pattern = r"(?P<plate>[^/]+)/(?P<well>[A-P]\d\d)_s(?P<site>\d)_(?P<channel>\w+)\.png"
    grouping = group_files(list_image_files(tmp_path), tmp_path, pattern)
    (fld,) = grouping.fields
    assert [c for c, _ in fld.files] == ["actin", "dna"]
    assert fld.meta == {"plate": "plateA", "well": "B02", "site": "1"}


def test_incomplete_fields(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path, "A_B01f00d0.tif", "A_B01f00d1.tif", "A_B02f00d0.tif")
    files = list_image_files(tmp_path)
    kept = group_files(files, tmp_path, "d")
    assert [f.id for f in kept.fields] == ["A_B01_00"]
    assert "A_B02_00 (missing d1)" in caplog.text
    with pytest.raises(BadInputError, match="missing d1") as err:
        group_files(files, tmp_path, "d", incomplete="error")
    assert "Fix:" in str(err.value)
    assert len(group_files(files, tmp_path, "d", incomplete="keep").fields) == 2


def test_duplicate_channel_names_the_fix(tmp_path: Path) -> None:
    _touch(tmp_path, "x_1_DAPI.tif", "x_1_DAPI_002.tif")
    with pytest.raises(BadInputError, match="two files for channel") as err:
        group_files(list_image_files(tmp_path), tmp_path, "suffix")
    assert "named group" in str(err.value)


@pytest.mark.parametrize(("pattern", "words"), [("(?P<well>\\w+", "fix the regex"),
                                                 ("(?P<well>\\w+)\\.tif", "channel")])
def test_bad_patterns(tmp_path: Path, pattern: str, words: str) -> None:
    files = _touch(tmp_path, "a.tif")
    with pytest.raises(BadInputError) as err:
        group_files(files, tmp_path, pattern)
    assert words in str(err.value) and "Fix:" in str(err.value)


def test_listing_skips_masks_labels_hidden_and_zarr_insides(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.tif", "masks/a.tif", "labels/a.png", ".hidden.tif", "notes.csv")
    (tmp_path / "img.zarr").mkdir()
    (tmp_path / "img.zarr" / "zarr.json").write_text("{}")
    names = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert names == ["img.zarr", "img/a.tif"]
