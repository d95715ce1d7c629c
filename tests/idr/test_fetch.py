"""``biofm idr fetch``: fields of a stand-in study mirrored to local OME-Zarr + a manifest that
trains and reads back the same pixels; resumable; failures listed, not fatal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biofm.cli.main import main
from biofm.core.errors import BadInputError
from biofm.data.dataset import IoLoader
from biofm.idr.fetch import fetch
from biofm.idr.query import parse_query
from biofm.idr.testing import StandInIDR
from biofm.io import read_manifest
from biofm.io.ome_zarr import read_ome_zarr

from .helpers import served_study


@pytest.fixture(scope="module")
def idr() -> Iterator[StandInIDR]:
    with served_study(plates=1, wells=3, fields=2, size=96, chunk=48) as (server, _, _):
        yield server


def query(idr: StandInIDR, tmp: Path, extra: str = "") -> str:
    return f"idr:idr0036?fields=2&api={idr.url}&zarr={idr.zarr_base}&cache=none{extra}"


def test_fetch_cli_mirrors_fields_and_manifest_reads_back(
    idr: StandInIDR, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mirror"
    assert main(["idr", "fetch", query(idr, tmp_path), "--out", str(out)]) == 0
    assert "6 fields: 6 fetched, 0 already there, 0 failed" in capsys.readouterr().out
    df = read_manifest(out / "manifest.csv")
    assert len(df) == 6 and set(df["well"]) == {"A1", "A2", "A3"}
    assert (df["pixel_source"] == "ome-zarr").all() and "Compound Name" in df.columns
    study = idr.studies[0]
    assert idr.files_root is not None
    load = IoLoader()
    for row in df.to_dict("records"):
        sample = load(row)
        remote = read_ome_zarr(idr.files_root / study.images[int(row["image_id"])].zarr)
        np.testing.assert_array_equal(sample.pixels, remote.pixels)
        assert sample.channels == study.channels
    # a second run fetches nothing
    before = sum(n for p, n in idr.hits.items() if p.startswith("/zarr/"))
    assert main(["idr", "fetch", query(idr, tmp_path), "--out", str(out)]) == 0
    assert "0 fetched, 6 already there" in capsys.readouterr().out
    assert sum(n for p, n in idr.hits.items() if p.startswith("/zarr/")) == before


def test_fetch_resumes_after_partial_run_and_lists_failures(
    idr: StandInIDR, tmp_path: Path
) -> None:
    out = tmp_path / "mirror"
    q = parse_query(query(idr, tmp_path))
    first = fetch(q, out)
    victim = out / "images" / f"{idr.studies[0].plates[0].wells[0].images[0]}.zarr"
    (victim / "0" / ".zarray").unlink()  # as if the run was killed while writing it
    (out / "images" / ".tmp-x.zarr-1").mkdir()  # a leftover temporary folder is ignored
    again = fetch(q, out)
    assert (first.fetched, again.fetched, again.present) == (6, 1, 5)
    # a field without an OME-Zarr copy is listed in failed.csv; the rest are kept
    broken = parse_query(query(idr, tmp_path).replace(idr.zarr_base, idr.zarr_base + "/nope"))
    report = fetch(broken, out)
    assert report.present == 6 and len(report.failed) == 0  # already there: nothing to fetch
    with pytest.raises(BadInputError, match="none of the 6 fields"):
        fetch(broken, tmp_path / "empty")
    reasons = pd.read_csv(tmp_path / "empty" / "failed.csv")["reason"]
    assert len(reasons) == 6 and reasons.str.contains("render=1").all()
