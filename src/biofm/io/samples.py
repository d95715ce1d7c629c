"""Load manifest rows as ``Sample`` objects: read each file, stack channels, attach metadata."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from biofm.core.errors import BadSampleError
from biofm.core.sample import UNKNOWN_CHANNEL, Sample
from biofm.io.base import ZSelect
from biofm.io.images import read_image
from biofm.io.manifest import CORE_COLUMNS, SEP

log = logging.getLogger(__name__)


def load_sample(row: Mapping[str, Any], root: Path | None = None, *, z: ZSelect = None) -> Sample:
    """Read the files of one manifest row into a ``Sample`` (channels stacked in order).

    Relative paths resolve against ``root`` (default: the working directory). ``meta`` gets
    every metadata column with a value, plus ``id``, ``source`` and ``path``.
    """
    rid = str(row.get("id") or "")
    paths = [Path(p) for p in str(row.get("paths") or "").split(SEP) if p]
    if not paths:
        raise BadSampleError("row has no paths", "fill the paths column of the manifest", rid)
    if root is not None:
        paths = [p if p.is_absolute() else Path(root) / p for p in paths]
    if len(paths) == 1:
        img = read_image(paths[0], z=z)
        pixels, file_names, px = img.pixels, img.channels, img.pixel_size_um
    else:
        pixels, px = _stack_planes(paths, z)
        file_names = None
    names = _row_channels(row.get("channels"))
    count = pixels.shape[0]
    if names is not None and len(names) != count:
        raise BadSampleError(
            f"channels column names {len(names)} channels {names} but the image has {count}",
            "list one name per channel in the channels column (empty entries = unknown), "
            "or leave it empty",
            rid,
        )
    names = names or file_names or [UNKNOWN_CHANNEL] * count
    row_px = _float_or_none(row.get("pixel_size_um"))
    meta = {k: _plain(v) for k, v in row.items() if k not in CORE_COLUMNS and not _missing(v)}
    meta.update(id=rid, source=str(row.get("source") or ""), path=SEP.join(map(str, paths)))
    return Sample(pixels, names, row_px if row_px is not None else px, meta)


def _stack_planes(paths: list[Path], z: ZSelect) -> tuple[np.ndarray, float | None]:
    planes: list[np.ndarray] = []
    first = None
    for path in paths:
        img = read_image(path, z=z)
        if img.num_channels != 1:
            raise BadSampleError(
                f"file holds {img.num_channels} channels but its row lists one file per channel",
                "put a multichannel file alone in its row, or split it into one file per "
                "channel",
                str(path),
            )
        if first is None:
            first = img
        elif img.pixels.shape != first.pixels.shape:
            raise BadSampleError(
                f"plane is {img.pixels.shape[1:]} but {paths[0].name} is {first.pixels.shape[1:]}",
                "all channel files of a field must have the same height and width: check "
                "which files the pattern grouped, or resample them",
                str(path),
            )
        planes.append(img.pixels[0])
    assert first is not None
    return np.stack(planes), first.pixel_size_um


def _row_channels(value: Any) -> list[str] | None:
    if _missing(value) or str(value) == "":
        return None
    return [name.strip() or UNKNOWN_CHANNEL for name in str(value).split(SEP)]


def _missing(value: Any) -> bool:
    """None, NaN, pandas NA or empty text."""
    if value is None or isinstance(value, str):
        return not value
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like values
        return False


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so meta stays JSON-friendly."""
    return value.item() if isinstance(value, np.generic) else value


def _float_or_none(value: Any) -> float | None:
    if _missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def iter_samples(
    df: pd.DataFrame, root: Path | None = None, *, on_error: Literal["raise", "skip"] = "raise"
) -> Iterator[Sample]:
    """Yield one ``Sample`` per row; ``on_error="skip"`` logs and skips bad rows instead."""
    skipped = 0
    from biofm.io.manifest import records

    for row in records(df):
        try:
            yield load_sample(row, root)
        except BadSampleError as err:
            if on_error == "raise":
                raise
            skipped += 1
            log.warning("skipping %s: %s", row.get("id"), err)
    if skipped:
        log.warning("skipped %d of %d rows", skipped, len(df))
