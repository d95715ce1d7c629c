"""idr: queries -> field rows over the stand-in's catalogue study, and the rows' raw pixels."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from biofm.core.errors import BadInputError, BadSampleError, ConfigError
from biofm.idr.http import IDRClient, IDRError, RetryPolicy
from biofm.idr.query import IDRFieldLoader, container_of, parse_query, resolve_fields
from biofm.idr.testing import StandInIDR, status
from biofm.io.ome_zarr import read_ome_zarr

from .helpers import served_study


@pytest.fixture(scope="module")
def idr() -> Iterator[StandInIDR]:
    with served_study(plates=2, wells=4, fields=2, size=128, chunk=64) as (server, _, _):
        yield server


def source(idr: StandInIDR, tmp: Path, extra: str = "") -> str:
    return (f"idr:idr0036?api={idr.url}&zarr={idr.zarr_base}&cache={tmp / 'cache'}"
            f"{extra}")  # fmt: skip


def test_parse_query_keys_and_errors() -> None:
    q = parse_query("idr:idr0036/screenA?plates=2&wells=16&fields=3&plate=20585,20586&render=1")
    assert (q.study, q.screen, q.plates, q.wells, q.fields) == ("idr0036", "screenA", 2, 16, 3)
    assert q.plate_names == ("20585", "20586") and q.render
    assert q.api == "https://idr.openmicroscopy.org" and q.zarr.endswith("/idr/zarr/v0.4")
    with pytest.raises(ConfigError, match=r"unknown key.*feilds"):
        parse_query("idr:idr0036?feilds=2")
    with pytest.raises(ConfigError, match="fields >= 1"):
        parse_query("idr:idr0036?fields=0")
    with pytest.raises(ConfigError, match="names no study"):
        parse_query("idr:cellpainting")
    assert container_of("idr0013-neumann-mitocheck/screenB") == "idr0013B"


def test_resolve_fields_walks_plates_wells_fields_with_annotations(
    idr: StandInIDR, tmp_path: Path
) -> None:
    study = idr.studies[0]
    with IDRClient(idr.url) as client:
        rows = resolve_fields(parse_query(source(idr, tmp_path, "&plates=2&wells=3&fields=2")),
                              client)  # fmt: skip
    assert len(rows) == 2 * 3 * 2
    assert len({r["image_id"] for r in rows}) == len(rows)
    for r in rows:
        image = study.images[r["image_id"]]
        well = study.wells[r["well_id"]]
        assert (r["field"], r["well"], r["plate"]) == (image.field, well.name,
                                                       next(p.name for p in study.plates
                                                            if p.id == image.plate_id))
        assert r["zarr"] == f"{idr.zarr_base}/idr0036A/{r['image_id']}.zarr"
        # the well's curated annotation, from the bulk-annotation table
        assert r["Compound Name"] == well.annotations["Compound Name"]
        assert "Hoechst" in r["Channels"]
    assert {r["well"] for r in rows} == {"A1", "A2", "A3"}  # first wells in row-major order


def test_resolve_by_plate_name_and_errors(idr: StandInIDR, tmp_path: Path) -> None:
    name = idr.studies[0].plates[1].name
    with IDRClient(idr.url) as client:
        rows = resolve_fields(parse_query(source(idr, tmp_path, f"&plate={name}")), client)
        assert {r["plate"] for r in rows} == {name} and {r["field"] for r in rows} == {0}
        with pytest.raises(BadInputError, match=r"plates \['nope'\] are not in"):
            resolve_fields(parse_query(source(idr, tmp_path, "&plate=nope")), client)
        with pytest.raises(BadInputError, match="no screen of idr0099"):
            resolve_fields(parse_query(f"idr:idr0099?api={idr.url}"), client)


def test_resolution_retries_a_busy_server(idr: StandInIDR, tmp_path: Path) -> None:
    sid = idr.studies[0].screen_id
    idr.faults.add(f"/api/v0/m/screens/{sid}/plates/", status(503), status(429, retry_after=0))
    before = idr.hits[f"/api/v0/m/screens/{sid}/plates/"]
    with IDRClient(idr.url, policy=RetryPolicy(base_delay_s=0.01)) as client:
        rows = resolve_fields(parse_query(source(idr, tmp_path, "&plates=1&wells=1")), client)
    assert len(rows) == 1
    assert idr.hits[f"/api/v0/m/screens/{sid}/plates/"] - before == 3


def test_loader_reads_raw_pixels_of_the_field(idr: StandInIDR, tmp_path: Path) -> None:
    q = parse_query(source(idr, tmp_path, "&plates=1&wells=2"))
    with IDRClient(idr.url) as client:
        rows = resolve_fields(q, client)
    loader = pickle.loads(pickle.dumps(IDRFieldLoader(q)))  # as a DataLoader worker gets it
    study = idr.studies[0]
    assert idr.files_root is not None
    for row in rows:
        sample = loader(row)
        local = read_ome_zarr(idr.files_root / study.images[row["image_id"]].zarr)
        assert sample.pixels.dtype == np.uint16
        np.testing.assert_array_equal(sample.pixels, local.pixels)
        assert sample.channels == study.channels
        assert sample.meta["pixel_source"] == "ome-zarr" and sample.meta["bit_depth"] == 16
    assert any((tmp_path / "cache").rglob("*")), "chunks went through the on-disk cache"


def test_missing_zarr_is_a_bad_sample_or_the_labelled_8bit_render(
    idr: StandInIDR, tmp_path: Path
) -> None:
    q = parse_query(source(idr, tmp_path, "&plates=1&wells=1"))
    with IDRClient(idr.url) as client:
        row = resolve_fields(q, client)[0]
    row = {**row, "zarr": f"{idr.zarr_base}/idr0036A/missing.zarr"}
    with pytest.raises(BadSampleError, match="render=1"):
        IDRFieldLoader(q)(row)
    rendered = IDRFieldLoader(parse_query(source(idr, tmp_path, "&render=1")))(row)
    assert rendered.pixels.dtype == np.uint8 and rendered.pixels.shape == (5, 128, 128)
    assert rendered.meta["pixel_source"] == "render_image_region"
    assert rendered.meta["bit_depth"] == 8 and rendered.meta["lossy"] is True


def test_refused_image_is_skipped_but_an_outage_stops(idr: StandInIDR, tmp_path: Path) -> None:
    q = parse_query(source(idr, tmp_path, "&plates=1&wells=1") + "&cache=none")
    with IDRClient(idr.url) as client:
        row = resolve_fields(q, client)[0]
    loader = IDRFieldLoader(q)
    loader.client(row["zarr"]).policy = RetryPolicy(max_attempts=2, base_delay_s=0.01)
    prefix = row["zarr"].split(idr.url, 1)[1]
    idr.faults.add(prefix, status(403))
    with pytest.raises(BadSampleError, match="HTTP 403"):
        loader(row)
    idr.faults.add(prefix, *[status(503)] * 8)  # every metadata request, every attempt
    with pytest.raises(IDRError, match="after 2 attempts"):
        loader(row)
    idr.faults.clear()
    assert loader(row).pixels.shape[0] == 5  # and it reads once the server is back


def test_plate_grid_places_each_field_in_its_well(idr: StandInIDR) -> None:
    study = idr.studies[0]
    plate = study.plates[0]
    with IDRClient(idr.url) as client:
        grid = client.plate_grid(plate.id, field=1)
    assert len(grid["grid"]) == 16 and len(grid["grid"][0]) == 24
    assert grid["rowlabels"][:2] == ["A", "B"] and grid["collabels"][0] == "1"
    cells = [(r, c, cell) for r, row in enumerate(grid["grid"]) for c, cell in enumerate(row)
             if cell is not None]
    assert len(cells) == len(plate.wells)
    for r, c, cell in cells:
        well = study.wells[cell["wellId"]]
        assert (well.row, well.column) == (r, c) and cell["id"] == well.images[1]
    assert {s["image_id"] for s in grid["image_sizes"]} == {cell["id"] for *_, cell in cells}
