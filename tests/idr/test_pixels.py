"""Remote OME-Zarr pixel access over real HTTP against the stand-in IDR serving written stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from biofm.core.errors import BadSampleError
from biofm.idr._standin_data import write_test_image, write_test_plate
from biofm.idr.cache import ChunkCache
from biofm.idr.http import IDRClient, RetryPolicy
from biofm.idr.pixels import RemoteImage, open_remote_image, open_remote_plate
from biofm.idr.testing import StandInIDR, truncate

CELLPAINTING = Path("/work/shared/data/cellpainting_fields/jump_BR00117006")
NAMES = ["Hoechst", "ConA", "MitoTracker"]
WELLS = ["A/1", "A/2", "B/1"]
H, W, CH = 96, 128, 32  # image and chunk size: a crop touches only some chunks
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, timeout_s=5.0)


def _real_planes(count: int) -> np.ndarray:
    """(count, 3, H, W) uint16 crops of real Cell Painting channels (generated when absent)."""
    files = sorted(CELLPAINTING.glob("r01c01f01p01-ch*.tiff"))[:3]
    if len(files) < 3:
        rng = np.random.default_rng(0)
        return rng.integers(0, 65535, (count, 3, H, W), dtype=np.uint16)
    from biofm.io import read_image

    stack = np.concatenate([read_image(f).pixels for f in files])  # (3, 1080, 1080)
    return np.stack([stack[:, i * H : (i + 1) * H, 200 : 200 + W] for i in range(count)])


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("zarr")
    planes = _real_planes(len(WELLS) * 2).astype(np.uint16)
    fields = {w: [planes[2 * i], planes[2 * i + 1]] for i, w in enumerate(WELLS)}
    write_test_plate(root / "plate.zarr", fields, NAMES, chunks=(1, CH, CH))
    rng = np.random.default_rng(1)  # (T, C, Z, Y, X): each plane offset so t/z picks show
    volume = np.stack([np.stack([planes[:3] // 2 + 97 * t + 13 * z for z in range(3)], 2)
                       for t in range(2)])[:, 0].astype(np.uint16)  # fmt: skip
    volume = volume + rng.integers(0, 5, volume.shape, dtype=np.uint16)
    write_test_image(root / "img.zarr", volume, "tczyx", NAMES, (1, 1, 1, CH, CH), zarr_format=3)
    return {"root": root, "fields": fields, "volume": volume}


@pytest.fixture()
def idr(stores: dict[str, object]) -> Iterator[StandInIDR]:
    with StandInIDR(files_root=stores["root"]) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture()
def client(idr: StandInIDR) -> Iterator[IDRClient]:
    with IDRClient(idr.url, policy=FAST) as c:
        yield c


def _chunk_hits(idr: StandInIDR, prefix: str) -> dict[str, int]:
    """Requests for chunk objects (not metadata files) under ``prefix``."""
    meta = (".zattrs", ".zarray", ".zgroup", ".zmetadata", "zarr.json")
    return {p: n for p, n in idr.hits.items() if p.startswith(prefix) and not p.endswith(meta)}


@pytest.mark.parametrize("well", WELLS)
def test_plate_field_crop_matches_source_exactly(
    stores: dict, client: IDRClient, well: str
) -> None:
    image = open_remote_image(client, f"/zarr/plate.zarr/{well}/1")
    crop = image.read(y=10, x=20, h=50, w=70)
    assert crop.dtype == np.uint16 and crop.shape == (3, 50, 70)
    np.testing.assert_array_equal(crop, stores["fields"][well][1][:, 10:60, 20:90])


def test_only_overlapping_chunks_are_fetched(
    stores: dict, idr: StandInIDR, client: IDRClient
) -> None:
    image = open_remote_image(client, "/zarr/plate.zarr/A/2/0")
    crop = image.read(channels=["Hoechst", "MitoTracker"], y=40, x=30, h=20, w=40)
    np.testing.assert_array_equal(crop, stores["fields"]["A/2"][0][[0, 2], 40:60, 30:70])
    expected = {f"/zarr/plate.zarr/A/2/0/0/{c}/1/{x}" for c in (0, 2) for x in (0, 1, 2)}
    assert set(_chunk_hits(idr, "/zarr/plate.zarr/A/2/0/")) == expected


def test_second_read_hits_cache(
    stores: dict, idr: StandInIDR, client: IDRClient, tmp_path: Path
) -> None:
    cache = ChunkCache(tmp_path / "cache", max_bytes=1 << 26)
    image = open_remote_image(client, "/zarr/img.zarr", cache=cache)
    first = image.read(t=1, y=0, x=0, h=40, w=40)
    before = dict(idr.hits)
    again = open_remote_image(client, "/zarr/img.zarr", cache=cache).read(t=1, h=40, w=40)
    np.testing.assert_array_equal(first, again)
    new = {p for p, n in idr.hits.items() if n != before.get(p, 0)}
    assert not [p for p in new if "/c/" in p or p.endswith("zarr.json")]  # chunks + metadata
    assert cache.stats().hits >= 12  # 3 channels x 4 chunks


def test_axes_and_metadata_from_zarr_v3(stores: dict, client: IDRClient) -> None:
    image = open_remote_image(client, "/zarr/img.zarr")
    volume = stores["volume"]
    assert isinstance(image, RemoteImage)
    assert (image.axes, image.ngff_version, image.channels) == ("TCZYX", "0.5", NAMES)
    assert image.shape == volume.shape and image.pixel_size_um == pytest.approx(0.65)
    np.testing.assert_array_equal(image.read(t=1, z=0, y=5, h=30), volume[1, :, 0, 5:35])
    np.testing.assert_array_equal(image.read(t=0), volume[0, :, 1])  # middle plane
    np.testing.assert_array_equal(image.read(t=1, z="max"), volume[1].max(axis=1))
    half = volume[0, :, 1, ::2, ::2]  # level 1 halves Y and X
    np.testing.assert_array_equal(image.read(level=1, x=3, w=20), half[:, :, 3:23])


def test_plate_field_axes_cyx_and_sample(stores: dict, client: IDRClient) -> None:
    image = open_remote_image(client, "/zarr/plate.zarr/B/1/0")
    assert (image.axes, image.ngff_version) == ("CYX", "0.4")
    sample = image.to_sample(channels=[2], y=0, x=0, h=32, w=32)
    assert sample.channels == ["MitoTracker"] and sample.pixels.dtype == np.uint16
    assert sample.pixel_size_um == pytest.approx(0.65)
    np.testing.assert_array_equal(sample.pixels, stores["fields"]["B/1"][0][2:3, :32, :32])


def test_bioformats2raw_container_opens_image_0(tmp_path: Path) -> None:
    root = tmp_path / "b2r.zarr"
    zarr.open_group(str(root), mode="w", zarr_format=3).attrs["ome"] = {
        "version": "0.5", "bioformats2raw.layout": 3}  # fmt: skip
    pixels = np.arange(2 * 40 * 40, dtype=np.uint16).reshape(2, 40, 40)
    write_test_image(root / "0", pixels, "cyx", ["a", "b"], (1, 16, 16), zarr_format=3)
    with StandInIDR(files_root=tmp_path) as idr, IDRClient(idr.url, policy=FAST) as client:
        image = open_remote_image(client, "/zarr/b2r.zarr")
        np.testing.assert_array_equal(image.read(y=8, h=20), pixels[:, 8:28])


def test_truncated_chunk_is_retried_then_decodes(
    stores: dict, idr: StandInIDR, client: IDRClient
) -> None:
    chunk = "/zarr/plate.zarr/A/1/0/0/1/0/0"
    idr.faults.add(chunk, truncate())
    image = open_remote_image(client, "/zarr/plate.zarr/A/1/0")
    np.testing.assert_array_equal(image.read(channels=[1], h=20, w=20),
                                  stores["fields"]["A/1"][0][1:2, :20, :20])  # fmt: skip
    assert idr.hits[chunk] == 2


def test_corrupt_chunk_raises_bad_sample_naming_url(
    idr: StandInIDR, client: IDRClient, tmp_path: Path
) -> None:
    chunk = "/zarr/img.zarr/0/c/0/1/1/1/2"
    idr.blobs[chunk] = b"\x02\x01garbage, not a blosc frame" * 3
    cache = ChunkCache(tmp_path, max_bytes=1 << 24)
    image = open_remote_image(client, "/zarr/img.zarr", cache=cache)
    with pytest.raises(BadSampleError, match=idr.url + chunk):
        image.read(t=0, z=1, y=CH, x=2 * CH, h=40, w=20)
    assert cache.get(idr.url + chunk) is None  # bad bytes are not kept


def test_missing_chunk_reads_fill_value(tmp_path: Path) -> None:
    pixels = np.full((2, 40, 40), 7, dtype=np.uint16)
    write_test_image(tmp_path / "gap.zarr", pixels, "cyx", ["a", "b"], (1, 16, 16))
    (tmp_path / "gap.zarr/0/1/0/1").unlink()  # channel 1, rows 0-15, cols 16-31
    with StandInIDR(files_root=tmp_path) as idr, IDRClient(idr.url, policy=FAST) as client:
        crop = open_remote_image(client, "/zarr/gap.zarr").read()
    expected = pixels.copy()
    expected[1, :16, 16:32] = 0
    np.testing.assert_array_equal(crop, expected)


def test_plate_traversal_lists_wells_and_fields(client: IDRClient) -> None:
    plate = open_remote_plate(client, "/zarr/plate.zarr")
    assert plate.wells == WELLS
    assert [r["name"] for r in plate.meta["rows"]] == ["A", "B"]
    assert plate.meta["acquisitions"][0]["id"] == 0
    fields = plate.fields()
    assert fields == [(w, f"{w}/{i}") for w in WELLS for i in (0, 1)]
    image = plate.open_field(fields[-1][1])
    assert image.channels == NAMES and image.shape == (3, H, W)
