"""8-bit fallback pixels from IDR's renderer, for images with no OME-Zarr copy.

**This is lossy and only a fallback.** ``/webgateway/render_image_region/`` returns a JPEG:
every channel is windowed (a linear map of ``[start, end]`` to 0..255, values outside are
clipped), quantised to 8 bits and JPEG-compressed. Raw intensities cannot be recovered, only
approximated to within ``(end - start) / 255`` plus the JPEG error. Prefer
`biofm.idr.pixels.open_remote_image` (raw uint16 from OME-Zarr) whenever a copy exists.

To keep the loss known and the same for every image, `render_region` asks for each channel on
its own, in greyscale, with a fixed window rather than the display window a curator chose, at
JPEG quality 1.0 by default. The default window is the whole dtype range (``pixel_range``, e.g.
0..65535 for uint16): nothing is clipped, but 12-bit data stored as uint16 keeps only about 16
grey levels; ``window="stats"`` (each channel's stored min..max) or a fixed ``(start, end)`` keeps
finer steps. The result is labelled in ``Sample.meta`` (``pixel_source``, ``bit_depth: 8``,
``lossy: True``, ``window``) so it is never mistaken for raw pixels; `approximate_raw` maps
the 8-bit values back to estimated raw intensities.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import numpy as np

from biofm.core.errors import BadInputError, BadSampleError, MissingExtraError
from biofm.core.sample import Sample
from biofm.idr.http import IDRClient

PIXEL_SOURCE = "render_image_region"


def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """JPEG bytes -> (h, w) uint8 (colour is converted to grey)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise MissingExtraError("pillow", "idr") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise BadSampleError(
            f"the renderer's answer is not a JPEG ({err})",
            "check the image id; IDR may be busy, so retry later",
            where,
        ) from err


def _select(channels: Sequence[int | str] | None, labels: list[str]) -> list[int]:
    """0-based channel indices from indices or labels (None: all)."""
    if channels is None:
        return list(range(len(labels)))
    picked = []
    for ch in channels:
        if isinstance(ch, str):
            if ch not in labels:
                raise BadInputError(f"no channel {ch!r}", f"use one of {labels}")
            picked.append(labels.index(ch))
        elif 0 <= int(ch) < len(labels):
            picked.append(int(ch))
        else:
            raise BadInputError(
                f"channel index {ch} out of range",
                f"use 0..{len(labels) - 1} (0-based) or a label of {labels}",
            )
    return picked


Window = tuple[float, float] | str | None


def _windows(window: Window, meta: dict[str, Any], picked: list[int]) -> list[list[float]]:
    """One [start, end] per picked channel: the dtype range (None), each channel's stored
    min/max statistics ("stats"), or the same (start, end) for all."""
    if window is None:
        lo, hi = meta.get("pixel_range") or (0, 65535)
        return [[float(lo), float(hi)] for _ in picked]
    if window == "stats":
        chans = meta.get("channels", [])
        return [
            [float(chans[k]["window"]["min"]), float(chans[k]["window"]["max"])] for k in picked
        ]
    if isinstance(window, str) or len(window) != 2 or not float(window[1]) > float(window[0]):
        raise BadInputError(
            f"window={window!r}",
            'pass None (dtype range), "stats" or (start, end) with end > start',
        )
    return [[float(window[0]), float(window[1])] for _ in picked]


def render_region(
    client: IDRClient,
    image_id: int,
    x: int,
    y: int,
    w: int,
    h: int,
    z: int = 0,
    t: int = 0,
    channels: Sequence[int | str] | None = None,
    quality: float = 1.0,
    window: Window = None,
) -> Sample:
    """A (C, h, w) uint8 crop from IDR's JPEG renderer: **8-bit, windowed, lossy**.

    Only a fallback for images without an OME-Zarr copy (see the module docstring). Each
    selected channel (0-based indices or labels; None: all) is requested separately in
    greyscale, windowed over ``window``, at JPEG ``quality`` (0..1). ``window`` is None (the
    dtype's full ``pixel_range`` from ``imgData``: the same for every image, but 12-bit data
    stored as uint16 then keeps only about 16 grey levels), ``"stats"`` (each channel's stored
    min..max: nothing clipped, finer steps) or a fixed ``(start, end)``. ``meta`` says
    ``pixel_source: "render_image_region"``, ``bit_depth: 8``, ``lossy: True`` and the
    ``window`` of each channel; `approximate_raw` maps the values back to estimated raw
    intensities.
    """
    if not 0.0 < quality <= 1.0:
        raise BadInputError(f"quality={quality}", "pass a JPEG quality in (0, 1]")
    meta = client.img_data(image_id)
    size = meta.get("size", {})
    width, height = int(size.get("width", 0)), int(size.get("height", 0))
    where = f"idr image {image_id}"
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise BadInputError(
            f"region x={x}, y={y}, w={w}, h={h} is not inside the {width}x{height} image",
            "pass a region inside the image",
            where,
        )
    if not (0 <= z < int(size.get("z", 1)) and 0 <= t < int(size.get("t", 1))):
        raise BadInputError(
            f"z={z}, t={t} out of range",
            f"pass 0 <= z < {size.get('z', 1)} and 0 <= t < {size.get('t', 1)}",
            where,
        )
    labels = [str(c.get("label", f"channel {i}")) for i, c in enumerate(meta.get("channels", []))]
    picked = _select(channels, labels)
    windows = _windows(window, meta, picked)
    planes = []
    for k, (lo, hi) in zip(picked, windows, strict=True):
        query = urlencode(
            {
                "region": f"{x},{y},{w},{h}",
                "c": f"{k + 1}|{lo:g}:{hi:g}$FFFFFF",
                "m": "g",
                "q": f"{quality:g}",
            }
        )
        path = f"/webgateway/render_image_region/{int(image_id)}/{z}/{t}/?{query}"
        plane = _decode_jpeg(client.get_bytes(path), where)
        if plane.shape != (h, w):
            raise BadSampleError(
                f"rendered channel {k} has shape {plane.shape}, not {(h, w)}",
                "check the region lies inside the image",
                where,
            )
        planes.append(plane)
    display = [c.get("window") for c in meta.get("channels", [])]
    pixel_size = (meta.get("pixel_size") or {}).get("x")
    return Sample(
        np.stack(planes),
        [labels[k] for k in picked],
        pixel_size_um=float(pixel_size) if pixel_size else None,
        meta={
            "id": f"idr:image/{int(image_id)}",
            "pixel_source": PIXEL_SOURCE,
            "bit_depth": 8,
            "lossy": True,
            "window": windows,
            "channel_indices": picked,
            "image_id": int(image_id),
            "region": [x, y, w, h],
            "z": z,
            "t": t,
            "jpeg_quality": quality,
            "pixels_type": meta.get("meta", {}).get("pixelsType"),
            "display_windows": [display[k] for k in picked],
        },
    )


def approximate_raw(pixels: np.ndarray, window: Sequence[Sequence[float]]) -> np.ndarray:
    """8-bit rendered values -> estimated raw intensities (float32): ``start + v / 255 *
    (end - start)`` per channel. ``window`` is ``Sample.meta["window"]`` (one (start, end)
    per channel). The error is at least half a step, ``(end - start) / 510``, plus the JPEG
    error; values clipped by the window are lost."""
    px = np.asarray(pixels, dtype=np.float32)
    if px.ndim != 3 or len(window) != px.shape[0]:
        raise BadInputError(
            f"{len(window)} windows for pixels of shape {px.shape}",
            "pass (C, H, W) pixels and one (start, end) per channel",
        )
    bounds = np.asarray(window, dtype=np.float32).reshape(-1, 2, 1, 1)
    return bounds[:, 0] + px / 255.0 * (bounds[:, 1] - bounds[:, 0])
