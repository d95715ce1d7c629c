"""``read_image``: one entry point for TIFF/OME-TIFF, PNG and local OME-Zarr.

The format is decided by the file's content (magic bytes), not its name; a folder is read
as OME-Zarr. Known-but-unsupported formats (JPEG, vendor formats) and unknown files raise
``UnsupportedFormatError``; missing, empty and damaged files raise ``BadSampleError``.
"""

from __future__ import annotations

from pathlib import Path

from biofm.core.errors import BadSampleError, UnsupportedFormatError
from biofm.io.base import FIX_CORRUPT, ImageData, ZSelect
from biofm.io.ome_zarr import is_ome_zarr, read_ome_zarr
from biofm.io.png import PNG_MAGIC, read_png
from biofm.io.tiff import TIFF_MAGICS, read_tiff

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
"""File suffixes that ``read_image`` reads (OME-Zarr images are folders)."""

_FIX_CONVERT = "convert it to OME-TIFF (e.g. with Bio-Formats 'bfconvert' or Fiji)"
_VENDOR = {
    ".czi": "Zeiss CZI", ".nd2": "Nikon ND2", ".lif": "Leica LIF", ".oib": "Olympus OIB",
    ".vsi": "Olympus VSI", ".ims": "Imaris", ".dv": "DeltaVision", ".ics": "ICS",
    ".h5": "HDF5", ".npy": "NumPy",
}


def read_image(
    path: str | Path, *, z: ZSelect = None, t: int | None = None, level: int = 0
) -> ImageData:
    """Read one image as (C, H, W) with its dtype, channel names and pixel size when known.

    ``z``: plane index or ``"max"`` for Z-stacks (required when Z > 1); ``t``: time index
    (required when T > 1); ``level``: OME-Zarr resolution level (0 = full resolution).
    """
    p = Path(path)
    where = str(p)
    if p.is_dir():
        if is_ome_zarr(p):
            return read_ome_zarr(p, level=level, z=z, t=t)
        raise UnsupportedFormatError(
            "folder is not an OME-Zarr image (no zarr.json / .zattrs)",
            "point at an image file or an OME-Zarr image folder; index folders of files "
            "with `biofm data index FOLDER`",
            where,
        )
    head = _head(p)
    if head.startswith(TIFF_MAGICS):
        return read_tiff(p, z=z, t=t)
    if head.startswith(PNG_MAGIC):
        return read_png(p)
    raise _unrecognised(p, head)


def _head(p: Path) -> bytes:
    if not p.exists():
        raise BadSampleError(
            "file not found",
            "check the path (manifest paths are relative to the manifest's folder); "
            "re-index with `biofm data index` if files moved",
            str(p),
        )
    if p.stat().st_size == 0:
        raise BadSampleError(
            "file is empty (0 bytes)",
            "re-copy or re-export it: an interrupted download or copy leaves empty files",
            str(p),
        )
    with p.open("rb") as fh:
        return fh.read(16)


def _unrecognised(p: Path, head: bytes) -> Exception:
    where = str(p)
    suffix = p.suffix.lower()
    if head.startswith(b"\xff\xd8\xff") or suffix in (".jpg", ".jpeg"):
        return UnsupportedFormatError(
            "JPEG is lossy and not read by biofm",
            "use the original lossless images (TIFF/PNG), or convert with "
            "imagecodecs/Pillow to PNG knowing the pixels were already altered",
            where,
        )
    if suffix in IMAGE_SUFFIXES:
        return BadSampleError(
            f"file has a {suffix} name but its content is not {suffix[1:].upper()}",
            FIX_CORRUPT,
            where,
        )
    if suffix == ".zarr" or suffix == ".zip":
        return UnsupportedFormatError(
            "zipped or single-file Zarr stores are not read",
            "unzip the OME-Zarr into a folder and point at that folder",
            where,
        )
    kind = _VENDOR.get(suffix, f"'{suffix or p.name}' files")
    return UnsupportedFormatError(
        f"{kind} are not a supported image format (supported: TIFF/OME-TIFF, PNG, OME-Zarr)",
        _FIX_CONVERT,
        where,
    )
