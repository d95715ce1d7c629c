"""Raw pixels of remote OME-Zarr images (IDR / EBI S3), fetching only the chunks a crop needs.

`IDRZarrStore` is a read-only zarr 3 store whose keys are fetched as ``base_path/key``
through `IDRClient.get_bytes` (retries, at most ``max_in_flight`` requests), consulting an
optional on-disk `ChunkCache` first; a 404 reads as a missing key, which zarr turns into the
fill value for chunks. Zarr v2 (NGFF 0.4) and v3 (NGFF 0.5) are auto-detected, so every codec
zarr knows is supported.

`open_remote_image` reads NGFF metadata (axes, ``omero`` channel labels, pixel size) with the
local reader's helpers; `RemoteImage.read` slices the zarr array, which fetches only the
overlapping chunks. `open_remote_plate` walks HCS plate and well metadata.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from biofm.core.errors import BadInputError, BadSampleError, BiofmError
from biofm.core.sample import Sample
from biofm.idr.cache import ChunkCache
from biofm.idr.http import IDRClient
from biofm.idr.zarr_store import IDRZarrStore
from biofm.io.base import FIX_CORRUPT, ZSelect
from biofm.io.ome_zarr import (
    axis_letter,
    image_group,
    level_pixel_size,
    ome_attrs,
    omero_labels,
    read_axes,
)

ChannelSelect = Sequence[int | str] | None
_NO_KEYS: tuple[str, ...] = ()


def _open_group(store: IDRZarrStore, zarr_format: int | None = None) -> Any:
    """The group at the store's root. A known ``zarr_format`` saves the probes for the other
    format's metadata (zarr.json vs .zgroup, .zmetadata): 4 requests per image instead of 7."""
    try:
        return zarr.open_group(store=store, mode="r", use_consolidated=False,
                               zarr_format=zarr_format)  # type: ignore[arg-type]
    except BiofmError:
        raise
    except Exception as err:  # zarr raises several types for a missing or invalid group
        raise BadSampleError(
            f"cannot open as a Zarr group ({type(err).__name__}: {err})",
            "check the URL points at an OME-Zarr image, plate or bioformats2raw container",
            store.url(""),
        ) from err


@dataclass
class RemoteImage:
    """One remote NGFF image. ``axes`` are letters from the metadata (e.g. ``"CZYX"``),
    ``shape`` that of level 0, ``channels`` the ``omero`` labels (None when unnamed)."""

    url: str
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    channels: list[str] | None
    pixel_size_um: float | None
    ngff_version: str
    store: IDRZarrStore = field(repr=False)
    group: Any = field(repr=False)
    datasets: list[dict[str, Any]] = field(repr=False)
    _arrays: dict[int, Any] = field(default_factory=dict, repr=False)

    def size(self, letter: str, level: int = 0) -> int:
        """Length of axis ``letter`` (1 when absent) at ``level``."""
        shape = self.array(level).shape if level else self.shape
        return int(shape[self.axes.index(letter)]) if letter in self.axes else 1

    def array(self, level: int = 0) -> Any:
        """The zarr array of resolution ``level`` (0 = full resolution)."""
        if not 0 <= level < len(self.datasets):
            raise BadInputError(
                f"level {level} requested; the image has {len(self.datasets)} levels",
                f"pass level between 0 and {len(self.datasets) - 1}",
                self.url,
            )
        if level not in self._arrays:  # opening reads the array metadata: do it once
            self._arrays[level] = _open_array(self.group, self.datasets[level]["path"])
        return self._arrays[level]

    def channel_indices(self, channels: ChannelSelect) -> list[int]:
        """Channel selection (indices or labels; None = all) -> indices."""
        count = self.size("C")
        if channels is None:
            return list(range(count))
        out = []
        for ch in channels:
            if isinstance(ch, str):
                if not self.channels or ch not in self.channels:
                    fix = f"use one of {self.channels}"
                    raise BadInputError(f"no channel named {ch!r}", fix, self.url)
                out.append(self.channels.index(ch))
            elif -count <= ch < count:
                out.append(ch % count)
            else:
                raise BadInputError(f"channel {ch} out of range", f"pass 0..{count - 1}", self.url)
        return out

    def read(
        self,
        channels: ChannelSelect = None,
        z: ZSelect = None,
        t: int = 0,
        y: int = 0,
        x: int = 0,
        h: int | None = None,
        w: int | None = None,
        level: int = 0,
    ) -> np.ndarray:
        """Crop ``[y:y+h, x:x+w]`` of plane ``z`` (None = middle, "max" = max projection) and
        time ``t`` -> (C, h, w) in the stored dtype. Fetches only the chunks it overlaps."""
        arr = self.array(level)
        selection = self._selection(arr.shape, self.channel_indices(channels), z, t, y, x, h, w)
        try:
            data = np.asarray(arr.get_orthogonal_selection(selection))
        except (BiofmError, MemoryError):
            raise
        except Exception as err:  # codec errors on a damaged chunk
            url = _find_bad_chunk(arr, selection, self.store)
            raise BadSampleError(
                f"cannot decode chunk {url} ({type(err).__name__}: {err})", FIX_CORRUPT, url
            ) from err
        return _to_cyx(data, self._kept_axes(selection))

    def _selection(
        self, shape: Sequence[int], chans: list[int], z: ZSelect, t: int, y: int, x: int,
        h: int | None, w: int | None,
    ) -> tuple[Any, ...]:  # fmt: skip
        """One orthogonal index per axis: ints for T/Z/others, slices for Y/X, a list for C."""
        sel: list[Any] = []
        for letter, n in zip(self.axes, shape, strict=True):
            if letter == "C":
                sel.append(np.asarray(chans, dtype=np.intp))
            elif letter == "Y":
                sel.append(_span(y, h, n, "y", self.url))
            elif letter == "X":
                sel.append(_span(x, w, n, "x", self.url))
            elif letter == "Z" and z == "max":
                sel.append(slice(0, n))
            elif letter == "Z":
                sel.append(_plane(n // 2 if z is None else int(z), n, "z", self.url))
            else:
                sel.append(_plane(t if letter == "T" else 0, n, letter.lower(), self.url))
        return tuple(sel)

    def _kept_axes(self, selection: tuple[Any, ...]) -> str:
        pairs = zip(self.axes, selection, strict=True)
        kept = "".join(a for a, s in pairs if not isinstance(s, int))
        return kept if "C" in kept else "C" + kept

    def to_sample(self, channels: ChannelSelect = None, **read_kw: Any) -> Sample:
        """`read` as a `Sample` with channel names (``unknown`` when unnamed) and ``meta``."""
        idx = self.channel_indices(channels)
        names = [self.channels[i] for i in idx] if self.channels else ["unknown"] * len(idx)
        pixels = self.read(channels=idx, **read_kw)
        level = int(read_kw.get("level", 0))
        meta = {"path": self.url, "format": "ome-zarr", "ngff_version": self.ngff_version,
                "axes": self.axes, "level": level, "read": dict(read_kw)}  # fmt: skip
        scale = 2**level if self.pixel_size_um is not None else 1
        size = self.pixel_size_um * scale if self.pixel_size_um is not None else None
        return Sample(pixels, names, size, meta)


def _span(start: int, length: int | None, n: int, axis: str, where: str) -> slice:
    stop = n if length is None else start + length
    if not 0 <= start < stop <= n:
        raise BadInputError(f"crop {axis}={start}..{stop} outside 0..{n}", "fit the crop", where)
    return slice(start, stop)


def _plane(index: int, n: int, axis: str, where: str) -> int:
    if not -n <= index < n:
        raise BadInputError(f"{axis}={index} is out of 0..{n - 1}", f"pass 0..{n - 1}", where)
    return index % n


def _to_cyx(data: np.ndarray, kept: str) -> np.ndarray:
    """Array with axes ``kept`` (C first when absent; Z only for max projection) -> (C, H, W)."""
    if data.ndim == len(kept) - 1:
        data = data[None]
    if "Z" in kept:
        data = data.max(axis=kept.index("Z"))
        kept = kept.replace("Z", "")
    order = [kept.index(a) for a in "CYX"]
    return np.ascontiguousarray(np.transpose(data, order))


def _find_bad_chunk(arr: Any, selection: tuple[Any, ...], store: IDRZarrStore) -> str:
    """URL of the first stored object under ``selection`` that fails to decode (evicted from
    the cache so a later read refetches it); the array's URL when none fails alone."""
    grid = arr.shards or arr.chunks
    per_axis = [sorted({int(i) // c for i in np.arange(s.start, s.stop)}) if isinstance(s, slice)
                else sorted({int(i) // c for i in np.atleast_1d(s)})
                for s, c in zip(selection, grid, strict=True)]  # fmt: skip
    for coords in itertools.product(*per_axis):
        region = tuple(slice(k * c, (k + 1) * c) for k, c in zip(coords, grid, strict=True))
        try:
            arr[region]
        except Exception:
            key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
            if store.cache is not None:
                store.cache.discard(store.url(key))
            return store.url(key)
    return store.url(arr.path)


def _open_array(group: Any, path: str) -> Any:
    """Array ``path`` of ``group``, opened with the group's Zarr format (no probing)."""
    full = f"{group.path}/{path}".strip("/")
    fmt = group.metadata.zarr_format
    return zarr.open_array(store=group.store, path=full, mode="r", zarr_format=fmt)


def open_remote_image(client: IDRClient, path: str, cache: ChunkCache | None = None) -> RemoteImage:
    """Open the NGFF image group at ``path`` (or image ``0`` of a bioformats2raw container).

    The Zarr format of the previous image this client opened is tried first (images of one
    study share it), falling back to auto-detection."""
    store = IDRZarrStore(client, path, cache)
    where = store.url("")
    hint = client.hints.get("zarr_format")
    try:
        root = _open_group(store, hint)
    except BadSampleError:
        if hint is None:
            raise
        root = _open_group(store)
    client.hints["zarr_format"] = root.metadata.zarr_format
    group, ome, version = image_group(root, where)
    ms = ome["multiscales"][0]
    datasets = list(ms.get("datasets") or [])
    array = _open_array(group, datasets[0]["path"])
    axes_meta = read_axes(ms, version, len(array.shape), where)
    axes = "".join(axis_letter(a) for a in axes_meta)
    n_c = int(array.shape[axes.index("C")]) if "C" in axes else 1
    return RemoteImage(
        url=where, axes=axes, shape=tuple(int(n) for n in array.shape),
        dtype=np.dtype(array.dtype), channels=omero_labels(ome, n_c, where),
        pixel_size_um=level_pixel_size(ms, datasets[0], axes_meta), ngff_version=version,
        store=store, group=group, datasets=datasets, _arrays={0: array},
    )  # fmt: skip


@dataclass
class RemotePlate:
    """An HCS plate: ``meta`` is the NGFF ``plate`` dict (rows, columns, wells, acquisitions)."""

    client: IDRClient
    path: str
    meta: dict[str, Any]
    group: Any = field(repr=False)
    cache: ChunkCache | None = None

    @property
    def wells(self) -> list[str]:
        """Well paths, e.g. ``["A/1", "A/2", "B/1"]``."""
        return [str(w["path"]) for w in self.meta.get("wells", [])]

    def well_fields(self, well: str) -> list[str]:
        """Field (image) paths of ``well`` relative to it, from the well's ``images``."""
        ome, _ = ome_attrs(dict(self.group[well].attrs))
        return [str(im["path"]) for im in (ome.get("well") or {}).get("images", [])]

    def fields(self) -> list[tuple[str, str]]:
        """Every (well, field path relative to the plate), e.g. ``("A/1", "A/1/0")``."""
        return [(w, f"{w}/{f}") for w in self.wells for f in self.well_fields(w)]

    def open_field(self, field_path: str) -> RemoteImage:
        """The image at ``field_path`` (as listed by `fields`)."""
        return open_remote_image(self.client, f"{self.path.rstrip('/')}/{field_path}", self.cache)


def open_remote_plate(client: IDRClient, path: str, cache: ChunkCache | None = None) -> RemotePlate:
    """Open the HCS plate group at ``path`` (NGFF 0.4 or 0.5)."""
    store = IDRZarrStore(client, path, cache)
    group = _open_group(store)
    ome, _ = ome_attrs(dict(group.attrs))
    if not isinstance(ome.get("plate"), dict):
        raise BadSampleError(
            "no 'plate' metadata: not an HCS plate", "open images with open_remote_image",
            store.url(""),
        )  # fmt: skip
    return RemotePlate(client, path, dict(ome["plate"]), group, cache)
