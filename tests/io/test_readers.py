"""Readers on generated files in real formats: OME-TIFF, plain/multi-page/compressed TIFF,
PNG (8/16-bit grey/RGB/RGBA), OME-Zarr 0.4 (Zarr v2) and 0.5 (Zarr v3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

from biofm.core.errors import BadInputError, BadSampleError, UnsupportedFormatError
from biofm.io import read_image, write_ome_tiff

RNG = np.random.default_rng(0)


def _u16(shape: tuple[int, ...], high: int = 65535) -> np.ndarray:
    return RNG.integers(0, high, shape, dtype=np.uint16)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("compression", [None, "lzw", "zstd", "zlib"])
def test_ome_tiff_round_trip_names_pixel_size(tmp_path: Path, compression: str | None) -> None:
    px = _u16((3, 40, 56), 4096)  # 12-bit data in uint16
    path = write_ome_tiff(tmp_path / "a.ome.tif", px, ["DNA", "ER", "AGP"], 0.65,
                          compression=compression)
    img = read_image(path)
    assert img.pixels.dtype == np.uint16 and img.pixels.shape == (3, 40, 56)
    np.testing.assert_array_equal(img.pixels, px)
    assert img.channels == ["DNA", "ER", "AGP"]
    assert img.pixel_size_um == pytest.approx(0.65)
    assert img.meta["format"] == "ome-tiff"


def test_ome_tiff_without_names_and_2d(tmp_path: Path) -> None:
    px = RNG.integers(0, 255, (20, 30), dtype=np.uint8)
    img = read_image(write_ome_tiff(tmp_path / "g.ome.tif", px))
    assert img.pixels.shape == (1, 20, 30) and img.pixels.dtype == np.uint8
    assert img.channels is None and img.pixel_size_um is None


def test_write_ome_tiff_rejects_wrong_name_count(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="one name per channel"):
        write_ome_tiff(tmp_path / "x.ome.tif", _u16((2, 8, 8)), ["DNA"])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_multipage_tiff_pages_are_channels(tmp_path: Path) -> None:
    px = _u16((4, 16, 24))
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for plane in px:
            tw.write(plane, metadata=None, compression="lzw")
    img = read_image(path)
    assert img.meta["axes"] == "IYX"
    np.testing.assert_array_equal(img.pixels, px)


def test_rgb_tiff_samples_become_channels_alpha_dropped(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 255, (12, 14, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    img = read_image(path)
    assert img.pixels.shape == (3, 12, 14)
    np.testing.assert_array_equal(img.pixels, np.moveaxis(rgba[..., :3], -1, 0))


def test_zstack_needs_a_choice(tmp_path: Path) -> None:
    stack = _u16((2, 5, 16, 16))  # C, Z, Y, X
    path = tmp_path / "cz.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "CZYX"})
    with pytest.raises(BadSampleError, match="Z=5") as err:
        read_image(path)
    assert "z='max'" in str(err.value)
    np.testing.assert_array_equal(read_image(path, z="max").pixels, stack.max(axis=1))
    np.testing.assert_array_equal(read_image(path, z=3).pixels, stack[:, 3])
    with pytest.raises(BadInputError, match="between 0 and 4"):
        read_image(path, z=7)


def test_imagej_hyperstack_singleton_time(tmp_path: Path) -> None:
    data = _u16((1, 1, 3, 10, 12))  # T Z C Y X
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "unit": "um"},
                     resolution=(1 / 0.5, 1 / 0.5))
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, data[0, 0])
    assert img.pixel_size_um == pytest.approx(0.5)


# --------------------------------------------------------------------------- PNG


@pytest.mark.parametrize(
    ("shape", "dtype", "channels"),
    [((20, 30), np.uint8, 1), ((20, 30), np.uint16, 1), ((20, 30, 3), np.uint8, 3),
     ((20, 30, 3), np.uint16, 3), ((20, 30, 4), np.uint8, 3), ((20, 30, 2), np.uint16, 1)],
)
def test_png_bit_depth_and_layout(
    tmp_path: Path, shape: tuple[int, ...], dtype: Any, channels: int
) -> None:
    arr = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    if len(shape) == 3 and shape[2] in (2, 4):
        arr[..., -1] = np.iinfo(dtype).max  # opaque alpha
    path = tmp_path / "x.png"
    path.write_bytes(imagecodecs.png_encode(arr))
    img = read_image(path)
    assert img.pixels.dtype == dtype and img.pixels.shape == (channels, 20, 30)
    expected = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)[:channels]
    np.testing.assert_array_equal(img.pixels, expected)


def test_png_varying_alpha_is_dropped_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arr = RNG.integers(0, 255, (8, 8, 4), dtype=np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(imagecodecs.png_encode(arr))
    assert read_image(path).pixels.shape == (3, 8, 8)
    assert "alpha channel is not constant" in caplog.text


# --------------------------------------------------------------------------- OME-Zarr


def _axes(letters: str) -> list[dict[str, str]]:
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return [
        {"name": a, "type": kinds[a], **({"unit": "micrometer"} if a in "yx" else {})}
        for a in letters
    ]


def _write_zarr(path: Path, data: np.ndarray, letters: str, version: str,
                labels: list[str] | None) -> Path:
    fmt = 3 if version == "0.5" else 2
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    scale = [0.4 if a in "yx" else 1.0 for a in letters]
    multiscale: dict[str, Any] = {
        "axes": _axes(letters),
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": [s * (2 if i >= len(letters) - 2 else 1)
                                            for i, s in enumerate(scale)]}]},
        ],
    }
    ome: dict[str, Any] = {"multiscales": [multiscale]}
    if labels:
        ome["omero"] = {"channels": [{"label": name} for name in labels]}
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", **ome}
    else:
        multiscale["version"] = "0.4"
        group.attrs.update(ome)
    group.create_array("0", data=data, chunks=data.shape)
    group.create_array("1", data=data[..., ::2, ::2], chunks=data[..., ::2, ::2].shape)
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_czyx(tmp_path: Path, version: str) -> None:
    data = _u16((2, 3, 16, 20))
    path = _write_zarr(tmp_path / "img.zarr", data, "czyx", version, ["DAPI", "GFP"])
    with pytest.raises(BadSampleError, match="Z=3"):
        read_image(path)
    img = read_image(path, z="max")
    np.testing.assert_array_equal(img.pixels, data.max(axis=1))
    assert img.channels == ["DAPI", "GFP"]
    assert img.pixel_size_um == pytest.approx(0.4)
    assert img.meta["ngff_version"] == version
    low = read_image(path, z=0, level=1)
    assert low.pixels.shape == (2, 8, 10) and low.pixel_size_um == pytest.approx(0.8)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_tcyx_and_tczyx(tmp_path: Path, version: str) -> None:
    tcyx = _u16((1, 3, 12, 14))
    img = read_image(_write_zarr(tmp_path / "a.zarr", tcyx, "tcyx", version, None))
    np.testing.assert_array_equal(img.pixels, tcyx[0])
    assert img.channels is None
    five = _u16((2, 4, 1, 12, 14))
    path = _write_zarr(tmp_path / "b.zarr", five, "tczyx", version, ["a", "b", "c", "d"])
    with pytest.raises(BadSampleError, match="t=<index>"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, t=1).pixels, five[1, :, 0])


def test_ome_zarr_missing_axes_and_plate(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    group.attrs["ome"] = {"version": "0.5", "plate": {"rows": [], "columns": []}}
    with pytest.raises(UnsupportedFormatError, match="one field"):
        read_image(tmp_path / "p.zarr")
    group = zarr.open_group(str(tmp_path / "n.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    group.create_array("0", data=_u16((2, 8, 8)))
    with pytest.raises(BadSampleError, match="axes"):
        read_image(tmp_path / "n.zarr")


# --------------------------------------------------------------------------- bad input


def _fix_in(err: pytest.ExceptionInfo[Exception], words: str) -> None:
    text = str(err.value)
    assert "Fix:" in text and words in text, text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadSampleError) as err:
        read_image(tmp_path / "nope.tif")
    _fix_in(err, "check the path")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(BadSampleError, match="0 bytes") as err:
        read_image(tmp_path / "empty.tif")
    _fix_in(err, "re-copy")


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    px = _u16((2, 64, 64))
    full = tmp_path / f"full{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(full, px, compression="lzw")
    else:
        full.write_bytes(imagecodecs.png_encode(px[0]))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadSampleError, match="cannot decode") as err:
        read_image(cut)
    _fix_in(err, "re-download")


def test_garbage_with_image_suffix(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"not an image at all")
    with pytest.raises(BadSampleError, match="not TIF") as err:
        read_image(tmp_path / "bad.tif")
    _fix_in(err, "re-export")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [("photo.jpg", b"\xff\xd8\xff\xe0" + b"0" * 64, "lossless"),
     ("notes.txt", b"hello", "convert it to OME-TIFF"),
     ("scan.czi", b"ZISRAWFILE" + b"0" * 64, "bfconvert")],
)
def test_unsupported_formats(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnsupportedFormatError) as err:
        read_image(tmp_path / name)
    _fix_in(err, words)


def test_plain_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError) as err:
        read_image(tmp_path)
    _fix_in(err, "biofm data index")
