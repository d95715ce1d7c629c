"""Local OME-Zarr reader (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3) for one image.

Axes are read from ``multiscales[0].axes`` (never assumed from the shape); level 0 (full
resolution) by default; channel names from ``omero.channels[].label``; the pixel size from
the level's ``scale`` transform when the X axis has a unit. A ``bioformats2raw`` layout
opens its first image (``0``). HCS plates and wells are not single images: point at one
field inside them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from biofm.core.errors import BadInputError, BadSampleError, BiofmError, UnsupportedFormatError
from biofm.io.base import FIX_CORRUPT, ImageData, ZSelect, to_cyx, to_um

log = logging.getLogger(__name__)

_AXIS_TYPES = {"time": "T", "channel": "C"}


def is_ome_zarr(path: Path) -> bool:
    """True when ``path`` is a folder holding Zarr group metadata (v2 or v3)."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("zarr.json", ".zattrs", ".zgroup")
    )


def read_ome_zarr(
    path: str | Path, *, level: int = 0, z: ZSelect = None, t: int | None = None
) -> ImageData:
    """Read one resolution level of a local OME-Zarr image as (C, H, W)."""
    where = str(path)
    group, ome, version = image_group(_open_group(Path(path), where), where)
    ms = ome["multiscales"][0]
    datasets = ms.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise BadInputError(
            f"level {level} requested; the image has {len(datasets)} levels",
            f"pass level between 0 and {len(datasets) - 1}",
            where,
        )
    try:
        array = group[datasets[level]["path"]]
        axes_meta = read_axes(ms, version, len(array.shape), where)
        letters = "".join(axis_letter(a) for a in axes_meta)
        pixels = to_cyx(array, letters, z=z, t=t, where=where)
    except (BiofmError, MemoryError):
        raise
    except Exception as err:  # zarr/codec errors on damaged stores
        raise BadSampleError(
            f"cannot read the OME-Zarr array ({type(err).__name__}: {err})", FIX_CORRUPT, where
        ) from err
    names = omero_labels(ome, pixels.shape[0], where)
    pixel_size = level_pixel_size(ms, datasets[level], axes_meta)
    meta = {"format": "ome-zarr", "path": where, "ngff_version": version, "axes": letters}
    return ImageData(np.ascontiguousarray(pixels), names, pixel_size, meta)


def image_group(group: Any, where: str) -> tuple[Any, dict[str, Any], str]:
    """The image group, its NGFF metadata and version; refuses plates and non-images."""
    ome, version = ome_attrs(dict(group.attrs))
    if "multiscales" not in ome and "bioformats2raw.layout" in ome:
        group = group["0"]  # bioformats2raw: image 0 of the container
        ome, version = ome_attrs(dict(group.attrs))
    if "plate" in ome or "well" in ome:
        raise UnsupportedFormatError(
            "this OME-Zarr is an HCS plate/well, not one image",
            "point at one field inside it, e.g. PLATE.zarr/A/1/0",
            where,
        )
    if not ome.get("multiscales"):
        raise BadSampleError(
            "no 'multiscales' metadata: not an OME-Zarr image",
            "point at the image group (the folder whose metadata holds 'multiscales')",
            where,
        )
    return group, ome, version


def _open_group(path: Path, where: str) -> Any:
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a non-group folder
        raise BadSampleError(
            f"cannot open as a Zarr group ({type(err).__name__}: {err})",
            "point at the OME-Zarr image folder (holding zarr.json or .zattrs)",
            where,
        ) from err


def ome_attrs(attrs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """NGFF metadata and its version: 0.5 nests it under ``ome``, 0.4 keeps it at the top."""
    if isinstance(attrs.get("ome"), dict):
        ome = attrs["ome"]
        return ome, str(ome.get("version", "0.5"))
    multiscales = attrs.get("multiscales")
    version = ""
    if isinstance(multiscales, list) and multiscales:
        version = str(multiscales[0].get("version", ""))
    return attrs, version


def read_axes(ms: dict[str, Any], version: str, ndim: int, where: str) -> list[dict[str, Any]]:
    axes = ms.get("axes")
    if axes is None and version in ("0.1", "0.2") and ndim == 5:
        axes = list("tczyx")  # fixed by the 0.1/0.2 specification
    if not axes or len(axes) != ndim:
        raise BadSampleError(
            f"multiscales axes {axes!r} do not match the {ndim}-d array",
            "write 'axes' in the multiscales metadata (NGFF >= 0.4), one per dimension",
            where,
        )
    return [{"name": a} if isinstance(a, str) else dict(a) for a in axes]


def axis_letter(axis: dict[str, Any]) -> str:
    name = str(axis.get("name", "")).lower()
    if name in ("t", "c", "z", "y", "x"):
        return name.upper()
    return _AXIS_TYPES.get(str(axis.get("type", "")).lower(), "Q")


def omero_labels(ome: dict[str, Any], num_channels: int, where: str) -> list[str] | None:
    channels = (ome.get("omero") or {}).get("channels") or []
    labels = [str(ch.get("label") or "") for ch in channels if isinstance(ch, dict)]
    if not any(labels):
        return None
    if len(labels) != num_channels:
        log.warning(
            "%s: omero lists %d channels but the image has %d; names ignored",
            where, len(labels), num_channels,
        )
        return None
    return [label or "unknown" for label in labels]


def _scale(transforms: list[dict[str, Any]] | None, ndim: int) -> np.ndarray:
    scale = np.ones(ndim)
    for tr in transforms or []:
        if tr.get("type") == "scale" and len(tr.get("scale", [])) == ndim:
            scale = scale * np.asarray(tr["scale"], dtype=float)
    return scale


def level_pixel_size(
    ms: dict[str, Any], dataset: dict[str, Any], axes: list[dict[str, Any]]
) -> float | None:
    names = [str(a.get("name", "")).lower() for a in axes]
    if "x" not in names:
        return None
    ix = names.index("x")
    scale = _scale(dataset.get("coordinateTransformations"), len(axes))
    scale = scale * _scale(ms.get("coordinateTransformations"), len(axes))
    return to_um(float(scale[ix]), axes[ix].get("unit"))


# ---------------------------------------------------------------------------------- writing
def _axis(letter: str) -> dict[str, str]:
    kinds = {"t": "time", "c": "channel"}
    if letter in kinds:
        return {"name": letter, "type": kinds[letter]}
    return {"name": letter, "type": "space", "unit": "micrometer"}


def _multiscales(axes: str, levels: int, pixel_size_um: float, version: str) -> dict[str, Any]:
    datasets = []
    for level in range(levels):
        scale = [pixel_size_um * 2**level if a in "yx" else 1.0 for a in axes]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    out: dict[str, Any] = {"axes": [_axis(a) for a in axes], "datasets": datasets}
    return {"version": version, **out} if version == "0.4" else out  # 0.5: version under "ome"


def write_ome_zarr(
    path: str | Path,
    pixels: np.ndarray,
    axes: str,
    channel_names: Sequence[str],
    chunks: Sequence[int],
    zarr_format: int = 2,
    pixel_size_um: float = 0.65,
    levels: int = 2,
) -> Path:
    """Write ``pixels`` (one dimension per letter of ``axes``, e.g. ``"tczyx"``) as an OME-Zarr
    image: NGFF 0.4 on Zarr v2 (``dimension_separator "/"``) or 0.5 on Zarr v3 (``zarr.json``),
    blosc-zstd chunks of shape ``chunks``, ``levels`` levels each halving Y and X (by
    subsampling), ``omero`` channel labels ``channel_names``."""

    axes = axes.lower()
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    for level in range(levels):
        step = 2**level
        data = pixels[tuple(slice(None, None, step) if a in "yx" else slice(None) for a in axes)]
        group.create_array(
            str(level), data=np.ascontiguousarray(data), chunks=tuple(chunks),
            compressors=_blosc(zarr_format), chunk_key_encoding=_key_encoding(zarr_format),
            fill_value=0,
        )  # fmt: skip
    version = "0.4" if zarr_format == 2 else "0.5"
    labels: list[Any] = [{"label": n, "active": True, "color": "FFFFFF"} for n in channel_names]
    multiscales = _multiscales(axes, levels, pixel_size_um, version)
    ome: dict[str, Any] = {"multiscales": [multiscales], "omero": {"channels": labels}}
    attrs: dict[str, Any] = ome if zarr_format == 2 else {"ome": {"version": version, **ome}}
    group.attrs.update(attrs)
    return Path(path)


def _blosc(zarr_format: int) -> Any:
    if zarr_format == 2:
        from numcodecs import Blosc

        return Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def _key_encoding(zarr_format: int) -> Any:
    return {"name": "v2" if zarr_format == 2 else "default", "separator": "/"}
