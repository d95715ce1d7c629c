"""Shared pieces of the readers: ``ImageData``, axis handling, units, alpha channels.

Every reader turns its N-d array with named axes into (C, H, W) with :func:`to_cyx`:

- ``Y`` and ``X`` are required; ``C`` (channels) and ``S`` (samples, e.g. RGB) become channels.
- ``T`` and ``Z`` of size 1 are dropped. A time series (T > 1) needs ``t=<index>``; a
  Z-stack (Z > 1) needs ``z=<index>`` or ``z="max"`` (maximum projection). No projection is
  ever assumed: an unspecified stack is an error that names both options.
- Other axes (``I``/``Q``: pages of a plain multi-page TIFF) count as channels when no
  ``C``/``S`` axis holds more than one plane; otherwise the layout is ambiguous (error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from biofm.core.errors import BadInputError, BadSampleError

log = logging.getLogger(__name__)

ZSelect = int | Literal["max"] | None

FIX_CORRUPT = (
    "re-download or re-export the file (an interrupted copy leaves truncated files); "
    "check that it opens in Fiji/napari"
)

_UM_PER_UNIT = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "mm": 1e3,
    "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6,
    "meter": 1e6, "metre": 1e6, "å": 1e-4, "angstrom": 1e-4, "\\u00b5m": 1.0,
}


class ArrayLike(Protocol):
    """Anything with a shape that can be indexed: numpy arrays, zarr arrays."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...


@dataclass
class ImageData:
    """One image as read from disk.

    ``pixels`` is (C, H, W) with the file's dtype; ``channels`` holds one name per channel
    when the file names them (OME-XML, OME-Zarr ``omero``), else ``None``;
    ``pixel_size_um`` is the physical X pixel size when the file records it.
    ``meta`` holds reader details (format, original axes, ...).
    """

    pixels: np.ndarray
    channels: list[str] | None = None
    pixel_size_um: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.meta.get("path")
        if self.pixels.ndim != 3:
            raise BadSampleError(
                f"reader produced shape {self.pixels.shape}, expected (C, H, W)",
                "report the file layout; convert it to OME-TIFF meanwhile",
                where,
            )
        if self.channels is not None and len(self.channels) != self.pixels.shape[0]:
            raise BadSampleError(
                f"{len(self.channels)} channel names for {self.pixels.shape[0]} channels",
                "give one name per channel (fix the OME metadata or the manifest)",
                where,
            )

    @property
    def num_channels(self) -> int:
        return int(self.pixels.shape[0])


def to_um(value: float | str | None, unit: str | None) -> float | None:
    """Convert a physical size to micrometres; ``None`` when absent, unknown or not > 0."""
    if value is None or unit is None:
        return None
    try:
        size = float(value)
    except (TypeError, ValueError):
        return None
    factor = _UM_PER_UNIT.get(unit.strip().lower())
    if factor is None or not np.isfinite(size) or size <= 0:
        return None
    return size * factor


def _pick(size: int, value: int | None, axis: str, where: str) -> int:
    """Index to keep along a T or Z axis of ``size`` planes."""
    if value is None:
        if size == 1:
            return 0
        option = "z='max' (maximum projection) or z=<index>" if axis == "z" else "t=<index>"
        raise BadSampleError(
            f"image has {axis.upper()}={size} planes and biofm reads one 2-D plane per channel",
            f"choose a plane: pass {option} (CLI: --{axis})",
            where,
        )
    if not -size <= value < size:
        raise BadInputError(
            f"{axis}={value} is out of range for {size} planes",
            f"pass {axis} between 0 and {size - 1}",
            where,
        )
    return value


def to_cyx(
    data: ArrayLike, axes: str, *, z: ZSelect = None, t: int | None = None, where: str = ""
) -> np.ndarray:
    """Reduce ``data`` with axis letters ``axes`` (e.g. ``"TCZYX"``) to a (C, H, W) array."""
    axes = axes.upper()
    shape = tuple(int(n) for n in data.shape)
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        raise BadSampleError(
            f"axes '{axes}' do not describe an image of shape {shape}",
            "the file metadata must name Y and X and one letter per dimension; re-export it",
            where,
        )
    if isinstance(z, str) and z != "max":
        raise BadInputError(f"z={z!r} is not understood", "pass z='max' or an integer", where)
    index: list[int | slice] = []
    kept = ""
    for ax, n in zip(axes, shape, strict=True):
        if ax == "T":
            index.append(_pick(n, t, "t", where))
        elif ax == "Z" and z != "max":
            index.append(_pick(n, z if isinstance(z, int) else None, "z", where))
        else:
            index.append(slice(None))
            kept += ax
    arr = np.asarray(data[tuple(index)])
    if "Z" in kept:
        arr = arr.max(axis=kept.index("Z"))
        kept = kept.replace("Z", "")
    return _channels_first(arr, kept, where)


def _channels_first(arr: np.ndarray, axes: str, where: str) -> np.ndarray:
    """Move every non-YX axis in front and flatten them into one channel axis."""
    extra = [i for i, ax in enumerate(axes) if ax not in "YX"]
    big_known = [i for i in extra if axes[i] in "CS" and arr.shape[i] > 1]
    big_other = [i for i in extra if axes[i] not in "CS" and arr.shape[i] > 1]
    if big_other and (big_known or len(big_other) > 1):
        raise BadSampleError(
            f"cannot tell channels apart in axes '{axes}' of shape {arr.shape}",
            "write the file with explicit axes metadata (OME-TIFF with DimensionOrder)",
            where,
        )
    order = [*extra, axes.index("Y"), axes.index("X")]
    arr = np.transpose(arr, order)
    return arr.reshape((-1, *arr.shape[-2:]))


def drop_alpha(pixels: np.ndarray, where: str) -> np.ndarray:
    """Drop the last channel (alpha). Warn when it is not constant (transparency was used)."""
    alpha = pixels[-1]
    if alpha.size and alpha.min() != alpha.max():
        log.warning(
            "%s: alpha channel is not constant; dropped anyway (transparency is not a stain)",
            where,
        )
    return pixels[:-1]
