"""TIFF / OME-TIFF reader and OME-TIFF writer (tifffile; LZW/zstd/deflate via imagecodecs).

Axes come from tifffile's series metadata (OME DimensionOrder, ImageJ hyperstack, shaped
or RGB layout), never from guesses about the shape. A plain multi-page TIFF (pages of one
shape, axes ``IYX``) reads as one channel per page. Only the first series is read; pyramid
levels other than full resolution are ignored.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from biofm.core.errors import BadInputError, BadSampleError, BiofmError
from biofm.io.base import FIX_CORRUPT, ImageData, ZSelect, drop_alpha, to_cyx, to_um

log = logging.getLogger(__name__)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ALPHA_EXTRASAMPLES = (1, 2)  # associated / unassociated alpha


def read_tiff(path: str | Path, *, z: ZSelect = None, t: int | None = None) -> ImageData:
    """Read the first series of a TIFF/OME-TIFF as (C, H, W), keeping the dtype."""
    where = str(path)
    try:
        with tifffile.TiffFile(path) as tf:
            return _read_first_series(tf, z, t, where)
    except (BiofmError, MemoryError):
        raise
    except Exception as err:  # tifffile/imagecodecs raise many types on damaged files
        raise BadSampleError(
            f"cannot decode the TIFF ({type(err).__name__}: {err})", FIX_CORRUPT, where
        ) from err


def _read_first_series(tf: tifffile.TiffFile, z: ZSelect, t: int | None, where: str) -> ImageData:
    if not tf.series:
        raise BadSampleError("TIFF holds no image series", FIX_CORRUPT, where)
    series = tf.series[0]
    if len(tf.series) > 1:
        log.debug("%s: %d series; reading the first", where, len(tf.series))
    axes = series.axes
    data = np.asarray(series.asarray())
    if "S" in axes and _has_alpha(series):
        s_axis = axes.index("S")
        data = np.moveaxis(drop_alpha(np.moveaxis(data, s_axis, 0), where), 0, s_axis)
    pixels = to_cyx(data, axes, z=z, t=t, where=where)
    names: list[str] | None = None
    pixel_size: float | None = None
    if tf.is_ome and tf.ome_metadata:
        names, pixel_size = _ome_info(tf.ome_metadata, pixels.shape[0], where)
    if pixel_size is None and tf.is_imagej:
        pixel_size = _imagej_pixel_size(tf)
    meta = {"format": "ome-tiff" if tf.is_ome else "tiff", "path": where, "axes": axes}
    return ImageData(np.ascontiguousarray(pixels), names, pixel_size, meta)


def _has_alpha(series: tifffile.TiffPageSeries) -> bool:
    page = series.keyframe
    extras = tuple(int(e) for e in (getattr(page, "extrasamples", ()) or ()))
    return any(e in _ALPHA_EXTRASAMPLES for e in extras)


def _ome_info(xml: str, num_channels: int, where: str) -> tuple[list[str] | None, float | None]:
    """Channel names and X pixel size (µm) of the first OME Image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        log.warning("%s: OME-XML does not parse; channel names and pixel size ignored", where)
        return None, None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    pixels = root.find(f"{ns}Image/{ns}Pixels")
    if pixels is None:
        return None, None
    pixel_size = to_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm"))
    names: list[str] = []
    for ch in pixels.findall(f"{ns}Channel"):
        name = ch.get("Name") or ""
        spp = int(ch.get("SamplesPerPixel") or 1)
        names += [name] if spp == 1 else [f"{name} [{k}]" if name else "" for k in range(spp)]
    if not any(names):
        return None, pixel_size
    if len(names) != num_channels:
        log.warning(
            "%s: OME-XML names %d channels but the image has %d; names ignored",
            where, len(names), num_channels,
        )
        return None, pixel_size
    return [n or "unknown" for n in names], pixel_size


def _imagej_pixel_size(tf: tifffile.TiffFile) -> float | None:
    unit = (tf.imagej_metadata or {}).get("unit")
    tag = tf.pages.first.tags.get("XResolution")
    if not unit or tag is None:
        return None
    num, den = tag.value
    return to_um(den / num, str(unit)) if num else None


def write_ome_tiff(
    path: str | Path,
    pixels: np.ndarray,
    channels: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    *,
    compression: str | None = None,
) -> Path:
    """Write (C, H, W) or (H, W) pixels as OME-TIFF with channel names; atomic (temp + rename).

    ``compression``: ``None``, ``"zlib"``, ``"lzw"`` or ``"zstd"``.
    """
    path = Path(path)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise BadInputError(
            f"pixels have shape {arr.shape}", "pass (C, H, W) or (H, W) pixels", str(path)
        )
    metadata = _ome_metadata(arr.shape[0], channels, pixel_size_um, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tifffile.imwrite(
            tmp, arr, ome=True, photometric="minisblack", metadata=metadata,
            compression=compression,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _ome_metadata(
    num_channels: int, channels: Sequence[str] | None, pixel_size_um: float | None, where: str
) -> dict[str, object]:
    metadata: dict[str, object] = {"axes": "CYX"}
    if channels is not None:
        if len(channels) != num_channels:
            raise BadInputError(
                f"{len(channels)} channel names for {num_channels} channels",
                "give exactly one name per channel",
                where,
            )
        metadata["Channel"] = {"Name": [str(c) for c in channels]}
    if pixel_size_um is not None:
        metadata.update(
            PhysicalSizeX=pixel_size_um, PhysicalSizeXUnit="µm",
            PhysicalSizeY=pixel_size_um, PhysicalSizeYUnit="µm",
        )
    return metadata
