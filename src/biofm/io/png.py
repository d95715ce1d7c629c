"""PNG reader: 8/16-bit grey, grey+alpha, RGB and RGBA; the bit depth is kept."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np

from biofm.core.errors import BadSampleError
from biofm.io.base import FIX_CORRUPT, ImageData, drop_alpha

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path: str | Path) -> ImageData:
    """Read a PNG as (C, H, W): grey -> 1 channel, RGB -> 3; an alpha channel is dropped."""
    where = str(path)
    data = Path(path).read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise BadSampleError("file does not start with the PNG signature", FIX_CORRUPT, where)
    try:
        arr = np.asarray(imagecodecs.png_decode(data))
    except Exception as err:  # decoder errors have codec-specific types
        raise BadSampleError(
            f"cannot decode the PNG ({type(err).__name__}: {err})", FIX_CORRUPT, where
        ) from err
    if arr.ndim == 2:
        pixels = arr[None]
    elif arr.ndim == 3:
        pixels = np.moveaxis(arr, -1, 0)
        if pixels.shape[0] in (2, 4):  # grey+alpha or RGBA: PNG stores alpha last
            pixels = drop_alpha(pixels, where)
    else:
        raise BadSampleError(f"unexpected PNG array shape {arr.shape}", FIX_CORRUPT, where)
    pixels = np.ascontiguousarray(pixels)
    return ImageData(pixels, None, None, {"format": "png", "path": where})
