"""The 8-bit render fallback against the stand-in IDR, compared with the raw OME-Zarr pixels."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import zarr

pytest.importorskip("httpx")
pytest.importorskip("PIL")

from PIL import Image

from biofm.core.errors import BadInputError
from biofm.idr._standin_extra import window_to_8bit
from biofm.idr._standin_study import StandInStudy, StudyImage
from biofm.idr.http import IDRError
from biofm.idr.render import PIXEL_SOURCE, approximate_raw, render_region
from biofm.idr.testing import StandInIDR, status

from .helpers import Served, served_study

X, Y, W, H = 10, 20, 96, 80


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with served_study(plates=1, wells=2, fields=1, size=128) as server:
        yield server


def _image(study: StandInStudy) -> StudyImage:
    return next(iter(study.images.values()))


def _raw(idr: StandInIDR, image: StudyImage) -> np.ndarray:
    assert idr.files_root is not None
    level = zarr.open_group(str(idr.files_root / image.zarr), mode="r")["0"]
    return np.asarray(level[:, Y : Y + H, X : X + W])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_full_range_render_is_labelled_and_matches_the_windowed_raw(served: tuple) -> None:
    idr, study, client = served
    image = _image(study)
    sample = render_region(client, image.id, X, Y, W, H)
    assert sample.pixels.shape == (len(study.channels), H, W)
    assert sample.pixels.dtype == np.uint8 and sample.channels == study.channels
    meta = sample.meta
    assert meta["pixel_source"] == PIXEL_SOURCE and meta["bit_depth"] == 8 and meta["lossy"]
    assert meta["window"] == [[0.0, 65535.0]] * len(study.channels)
    raw = _raw(idr, image)
    for k in range(len(study.channels)):
        # the dtype-wide window leaves these 12-bit values only a few grey levels: JPEG's
        # rounding is the only difference
        diff = np.abs(sample.pixels[k].astype(int) - window_to_8bit(raw[k], 0.0, 65535.0))
        assert diff.max() <= 1 and diff.mean() < 0.05


def test_fixed_window_maps_back_to_raw(served: tuple) -> None:
    idr, study, client = served
    image = _image(study)
    raw = _raw(idr, image)
    lo, hi = float(raw.min()), float(raw.max())
    sample = render_region(client, image.id, X, Y, W, H, window=(lo, hi))
    assert sample.meta["window"] == [[lo, hi]] * len(study.channels)
    estimate = approximate_raw(sample.pixels, sample.meta["window"])
    step = (hi - lo) / 255.0
    for k in range(len(study.channels)):
        assert _corr(sample.pixels[k], window_to_8bit(raw[k], lo, hi)) > 0.99
        assert _corr(estimate[k], raw[k]) > 0.99
        assert np.percentile(np.abs(estimate[k] - raw[k]), 99) <= 3 * step


def test_channel_selection_by_label_and_index(served: tuple) -> None:
    _, study, client = served
    image = _image(study)
    sample = render_region(
        client, image.id, 0, 0, 32, 16, channels=[study.channels[2], 0], quality=0.9
    )
    assert sample.channels == [study.channels[2], study.channels[0]]
    assert sample.pixels.shape == (2, 16, 32) and sample.meta["channel_indices"] == [2, 0]
    with pytest.raises(BadInputError, match="no channel"):
        render_region(client, image.id, 0, 0, 8, 8, channels=["nope"])
    with pytest.raises(BadInputError, match="inside"):
        render_region(client, image.id, 100, 0, 64, 8)
    with pytest.raises(BadInputError, match="window"):
        render_region(client, image.id, 0, 0, 8, 8, window=(5.0, 5.0))


def test_server_answers_jpeg_colour_and_requires_a_region(served: tuple) -> None:
    idr, study, client = served
    image = _image(study)
    raw = _raw(idr, image)
    import httpx

    base = f"{idr.url}/webgateway/render_image_region/{image.id}/0/0/"
    params = {
        "region": f"{X},{Y},{W},{H}",
        "c": "1|0:4095$FF0000,-2,3|0:4095$0000FF",
        "m": "c",
        "q": "1.0",
    }
    resp = httpx.get(base, params=params)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/jpeg"
    rgb = np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB"))
    assert rgb.shape == (H, W, 3)
    assert _corr(rgb[..., 0], window_to_8bit(raw[0], 0, 4095)) > 0.98
    assert _corr(rgb[..., 2], window_to_8bit(raw[2], 0, 4095)) > 0.98
    assert rgb[..., 1].max() <= 8  # channel 2 inactive, nothing green beyond JPEG noise
    with pytest.raises(IDRError) as err:
        client.get_bytes(f"/webgateway/render_image_region/{image.id}/0/0/")
    assert err.value.status == 400 and "tile or region argument required" in str(err.value)


def test_503_then_success(served: tuple) -> None:
    idr, study, client = served
    image = _image(study)
    path = f"/webgateway/render_image_region/{image.id}/0/0/"
    before = idr.hits[path]
    idr.faults.add("/webgateway/render_image_region/", status(503))
    sample = render_region(client, image.id, 0, 0, 16, 16, channels=[0])
    assert sample.pixels.shape == (1, 16, 16) and idr.hits[path] == before + 2
