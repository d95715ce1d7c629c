"""Microscopy image I/O and manifests.

- :func:`read_image`: TIFF/OME-TIFF, PNG, local OME-Zarr -> :class:`ImageData` (C, H, W).
- :func:`write_ome_tiff`: OME-TIFF with channel names and pixel size.
- :func:`build_manifest`, :func:`write_manifest`, :func:`read_manifest`: one row per field.
- :func:`load_sample`, :func:`iter_samples`: manifest rows -> ``biofm.core.Sample``.
- :func:`shared_corpus_manifest`: the shared real-data corpus in one manifest.
"""

from biofm.io.base import ImageData
from biofm.io.corpus import shared_corpus_manifest
from biofm.io.filesets import PRESETS, SPECIAL_PATTERNS, group_files, list_image_files
from biofm.io.images import read_image
from biofm.io.manifest import build_manifest, channel_counts, read_manifest, write_manifest
from biofm.io.ome_zarr import read_ome_zarr
from biofm.io.png import read_png
from biofm.io.samples import iter_samples, load_sample
from biofm.io.tiff import read_tiff, write_ome_tiff

__all__ = [
    "PRESETS",
    "SPECIAL_PATTERNS",
    "ImageData",
    "build_manifest",
    "channel_counts",
    "group_files",
    "iter_samples",
    "list_image_files",
    "load_sample",
    "read_image",
    "read_manifest",
    "read_ome_zarr",
    "read_png",
    "read_tiff",
    "shared_corpus_manifest",
    "write_manifest",
    "write_ome_tiff",
]
