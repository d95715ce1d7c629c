"""Manifests on generated folders: build, write (relative paths), read, load samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from biofm.core.errors import BadInputError, BadSampleError
from biofm.io import (
    build_manifest,
    iter_samples,
    load_sample,
    read_manifest,
    write_manifest,
    write_ome_tiff,
)
from biofm.io.manifest import CORE_COLUMNS

RNG = np.random.default_rng(1)


def _phenix_folder(root: Path, fields: int = 2, size: tuple[int, int] = (24, 32)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(1, fields + 1):
        for ch in (5, 2, 3):
            plane = RNG.integers(0, 4095, size, dtype=np.uint16)
            tifffile.imwrite(root / f"r01c02f{f:02d}p01-ch{ch}sk1fk1fl1.tiff", plane,
                             compression="lzw")
    return root


def test_build_write_read_load(tmp_path: Path) -> None:
    folder = _phenix_folder(tmp_path / "plate")
    df = build_manifest(folder, "phenix", {"ch5": "Hoechst 33342", "ch2": "AGP"}, "demo",
                        pixel_size_um=0.6)
    assert list(df.columns[:5]) == list(CORE_COLUMNS)
    assert list(df["id"]) == ["demo/r01c02f01p01sk1", "demo/r01c02f02p01sk1"]
    assert df["channels"][0] == "AGP;ch3;Hoechst 33342"  # natural order ch2, ch3, ch5
    assert df["well"][0] == "A02"

    out = write_manifest(df, tmp_path / "out" / "manifest.csv")
    raw = pd.read_csv(out, dtype=str)
    assert raw["paths"][0].startswith("../plate/r01c02f01p01-ch2")  # relative to the manifest
    back = read_manifest(out)
    assert back["paths"].tolist() == df["paths"].tolist()  # resolved to absolute again
    assert back["field"].tolist() == ["01", "02"]  # zero-padded codes stay text
    assert back["pixel_size_um"].tolist() == [0.6, 0.6]

    sample = load_sample(back.iloc[0].to_dict())
    assert sample.pixels.shape == (3, 24, 32) and sample.pixels.dtype == np.uint16
    assert sample.channels == ["AGP", "ch3", "Hoechst 33342"]
    assert sample.pixel_size_um == 0.6
    assert sample.meta["id"] == "demo/r01c02f01p01sk1" and sample.meta["well"] == "A02"
    assert sample.meta["path"].count(";") == 2
    first = tifffile.imread(folder / "r01c02f01p01-ch2sk1fk1fl1.tiff")
    np.testing.assert_array_equal(sample.pixels[0], first)
    assert len(list(iter_samples(back))) == 2


def test_parquet_manifest_and_numeric_columns(tmp_path: Path) -> None:
    write_ome_tiff(tmp_path / "img" / "a.ome.tif", RNG.integers(0, 9, (2, 8, 8), dtype=np.uint8),
                   ["DNA", "RNA"], 0.3)
    df = build_manifest(tmp_path / "img", "single", source="s")
    assert df["channels"][0] == ""  # names come from the file
    df["n_cells"] = [12]
    for name in ("m.parquet", "m.csv"):
        back = read_manifest(write_manifest(df, tmp_path / name))
        assert back["n_cells"].tolist() == [12]
        sample = load_sample(back.iloc[0].to_dict())
        assert sample.channels == ["DNA", "RNA"] and sample.pixel_size_um == pytest.approx(0.3)
        assert sample.meta["n_cells"] == 12


def test_relative_paths_resolve_against_root(tmp_path: Path) -> None:
    write_ome_tiff(tmp_path / "x.ome.tif", np.zeros((1, 4, 4), np.uint8))
    row = {"id": "x", "paths": "x.ome.tif", "channels": ";"}
    with pytest.raises(BadSampleError, match="one name per channel"):
        load_sample(row, root=tmp_path)  # ";" = two (unknown) channels for a 1-channel file
    row["channels"] = ""
    assert load_sample(row, root=tmp_path).channels == ["unknown"]


def test_channel_name_count_mismatch(tmp_path: Path) -> None:
    write_ome_tiff(tmp_path / "x.ome.tif", np.zeros((3, 4, 4), np.uint16))
    row = {"id": "r1", "paths": str(tmp_path / "x.ome.tif"), "channels": "DNA;AGP"}
    with pytest.raises(BadSampleError, match="names 2 channels") as err:
        load_sample(row)
    assert "r1" in str(err.value) and "one name per channel" in str(err.value)


def test_mismatched_plane_sizes_name_the_file(tmp_path: Path) -> None:
    _phenix_folder(tmp_path, fields=1)
    odd = tmp_path / "r01c02f01p01-ch3sk1fk1fl1.tiff"
    tifffile.imwrite(odd, np.zeros((10, 10), np.uint16))
    row = build_manifest(tmp_path, "phenix").iloc[0].to_dict()
    with pytest.raises(BadSampleError, match="same height and width") as err:
        load_sample(row)
    assert str(odd) in str(err.value)


def test_multichannel_file_in_per_channel_row(tmp_path: Path) -> None:
    write_ome_tiff(tmp_path / "a.ome.tif", np.zeros((2, 4, 4), np.uint8))
    write_ome_tiff(tmp_path / "b.ome.tif", np.zeros((1, 4, 4), np.uint8))
    row = {"id": "r", "paths": f"{tmp_path / 'a.ome.tif'};{tmp_path / 'b.ome.tif'}",
           "channels": ""}
    with pytest.raises(BadSampleError, match="holds 2 channels") as err:
        load_sample(row)
    assert "alone in its row" in str(err.value)


def test_iter_samples_skip_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_ome_tiff(tmp_path / "ok.ome.tif", np.ones((1, 4, 4), np.uint8))
    (tmp_path / "bad.tif").write_bytes(b"")
    df = pd.DataFrame({"id": ["ok", "bad"], "channels": ["", ""],
                       "paths": [str(tmp_path / "ok.ome.tif"), str(tmp_path / "bad.tif")]})
    with pytest.raises(BadSampleError):
        list(iter_samples(df))
    assert [s.meta["id"] for s in iter_samples(df, on_error="skip")] == ["ok"]
    assert "skipping bad" in caplog.text


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found") as err:
        read_manifest(tmp_path / "none.csv")
    assert "biofm data index" in str(err.value)
    (tmp_path / "m.csv").write_text("id,files\na,x.tif\n")
    with pytest.raises(BadInputError, match=r"lacks required columns \['paths', 'channels'\]"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "d.csv").write_text("id,paths,channels\na,x.tif,\na,y.tif,\n")
    with pytest.raises(BadInputError, match="unique"):
        read_manifest(tmp_path / "d.csv")


def test_build_manifest_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(BadInputError, match="folder not found"):
        build_manifest(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="no images") as err:
        build_manifest(tmp_path)
    assert "Fix:" in str(err.value)
    _phenix_folder(tmp_path, fields=1)
    with pytest.raises(BadInputError, match="groups none") as err:
        build_manifest(tmp_path, "d")
    assert "--pattern auto" in str(err.value)
    build_manifest(tmp_path, "phenix", {"ch9": "x"})
    assert "channel map keys matching no file: ['ch9']" in caplog.text


def test_write_manifest_is_atomic_and_checks_columns(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="lacks required columns"):
        write_manifest(pd.DataFrame({"id": ["a"]}), tmp_path / "m.csv")
    df = pd.DataFrame({"id": ["a"], "paths": [str(tmp_path / "a.tif")], "channels": [""]})
    write_manifest(df, tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
