"""Manifests: one row per field (one multichannel image), as CSV (or Parquet by suffix).

Columns, in order:

- ``id``: unique text, ``<source>/<field>`` when built here.
- ``paths``: ``;``-joined file paths: one per channel (single-plane files, in channel order)
  or one file holding every channel. Written relative to the manifest's folder; resolved to
  absolute paths on read.
- ``channels``: ``;``-joined channel names as acquired (free text). Empty = unknown (a
  single-file row then takes names from the file's metadata when it has some); an empty
  entry (``DNA;;AGP``) = that channel is unknown.
- ``source``: dataset name. ``pixel_size_um``: float or empty.
- metadata columns (plate, well, site, field, label, ...), any number. On CSV read, a column
  whose values are all numbers becomes numeric unless some value is zero-padded (``01``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biofm.core.errors import BadInputError
from biofm.io.filesets import (
    DEFAULT_EXCLUDE,
    FileField,
    Incomplete,
    group_files,
    list_image_files,
)

log = logging.getLogger(__name__)

SEP = ";"
CORE_COLUMNS = ("id", "paths", "channels", "source", "pixel_size_um")
REQUIRED_COLUMNS = ("id", "paths", "channels")
_FIX_REINDEX = "re-create it with `biofm data index FOLDER --out manifest.csv`"


def build_manifest(
    folder: str | Path,
    pattern: str = "auto",
    channel_map: Mapping[str, str] | None = None,
    source: str | None = None,
    recursive: bool = True,
    *,
    pixel_size_um: float | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    incomplete: Incomplete = "skip",
) -> pd.DataFrame:
    """Index the images under ``folder`` into a manifest (one row per field).

    ``pattern``: preset or regex (see :mod:`biofm.io.filesets`); ``channel_map`` renames
    channel keys to names (``{"ch5": "Hoechst 33342"}``; unmapped keys keep their key);
    ``source`` defaults to the folder name. Files the pattern does not match are skipped
    with a warning (``auto`` keeps them as single-file fields instead).
    """
    root = Path(os.path.abspath(folder))
    if not root.is_dir():
        raise BadInputError("folder not found", "pass an existing folder of images", str(root))
    files = list_image_files(root, recursive=recursive, exclude=exclude)
    if not files:
        raise BadInputError(
            "no images (.tif/.tiff/.png files or OME-Zarr folders) found",
            "check the folder; index nested folders with recursive=True, or relax exclude",
            str(root),
        )
    grouping = group_files(files, root, pattern, incomplete=incomplete)
    if grouping.unmatched:
        log.warning(
            "pattern %r does not match %d of %d files; skipped: %s",
            pattern, len(grouping.unmatched), len(files),
            [p.relative_to(root).as_posix() for p in grouping.unmatched[:10]],
        )
    if not grouping.fields:
        raise BadInputError(
            f"pattern {pattern!r} groups none of the {len(files)} files into a field",
            f"check --pattern against names such as {files[0].name!r}, or use --pattern auto",
            str(root),
        )
    src = source or root.name
    df = _rows(grouping.fields, src, _Renamer(channel_map or {}), pixel_size_um)
    log.debug("indexed %s with pattern %s: %d fields", root, grouping.pattern, len(df))
    return df


def _rows(
    fields: Sequence[FileField], source: str, rename: _Renamer, pixel_size_um: float | None
) -> pd.DataFrame:
    rows = []
    for fld in fields:
        names = [] if fld.single else [rename(key) for key, _ in fld.files]
        rows.append({
            "id": f"{source}/{fld.id}",
            "paths": _join([str(p) for _, p in fld.files], "path"),
            "channels": _join(names, "channel name"),
            "source": source,
            "pixel_size_um": np.nan if pixel_size_um is None else float(pixel_size_um),
            **fld.meta,
        })
    rename.warn_unused()
    return order_columns(pd.DataFrame(rows))


class _Renamer:
    """Channel key -> name through ``channel_map`` (exact, then case-insensitive)."""

    def __init__(self, channel_map: Mapping[str, str]) -> None:
        self.exact = dict(channel_map)
        self.lower = {k.lower(): v for k, v in channel_map.items()}
        self.used: set[str] = set()

    def __call__(self, key: str) -> str:
        if key in self.exact:
            self.used.add(key.lower())
            return self.exact[key]
        if key.lower() in self.lower:
            self.used.add(key.lower())
            return self.lower[key.lower()]
        return key

    def warn_unused(self) -> None:
        unused = sorted(set(self.lower) - self.used)
        if unused:
            log.warning("channel map keys matching no file: %s", unused)


def _join(items: Sequence[str], what: str) -> str:
    bad = [i for i in items if SEP in i]
    if bad:
        raise BadInputError(
            f"{what} {bad[0]!r} contains ';', the manifest list separator",
            "rename it without ';'",
        )
    return SEP.join(items)


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing core columns and put them first, metadata after."""
    for col in CORE_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan if col == "pixel_size_um" else ""
    rest = [c for c in df.columns if c not in CORE_COLUMNS]
    return df[[*CORE_COLUMNS, *rest]].reset_index(drop=True)


def _check_columns(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BadInputError(
            f"manifest lacks required columns {missing} (it has {list(df.columns)})",
            f"add columns {list(REQUIRED_COLUMNS)} (channels may be empty), or {_FIX_REINDEX}",
            where,
        )


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` (CSV, or Parquet for ``.parquet``) atomically; paths are
    stored relative to the manifest's folder."""
    path = Path(os.path.abspath(path))
    _check_columns(df, str(path))
    out = order_columns(df.copy())
    out["paths"] = [_relative(str(p), path.parent) for p in out["paths"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() == ".parquet":
            out.to_parquet(tmp, index=False)
        else:
            out.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _relative(paths: str, base: Path) -> str:
    out = []
    for p in paths.split(SEP):
        try:
            out.append(Path(os.path.relpath(os.path.abspath(p), base)).as_posix())
        except ValueError:  # another drive: keep absolute
            out.append(p)
    return SEP.join(out)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; ``paths`` come back absolute."""
    path = Path(os.path.abspath(path))
    where = str(path)
    if not path.is_file():
        raise BadInputError("manifest not found", f"check the path, or {_FIX_REINDEX}", where)
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow parser errors
        raise BadInputError(
            f"cannot parse the manifest ({type(err).__name__}: {err})",
            f"write it as CSV with a header row, or {_FIX_REINDEX}", where,
        ) from err
    _check_columns(df, where)
    df = order_columns(df)
    df["id"] = df["id"].astype(str)
    dup = sorted(df["id"][df["id"].duplicated()].unique())
    if dup or (df["id"] == "").any():
        raise BadInputError(
            f"ids must be unique and non-empty; duplicates: {dup[:5]}",
            "give every row its own id", where,
        )
    df["paths"] = [_absolute(str(p), path.parent) for p in df["paths"]]
    df["channels"] = df["channels"].fillna("").astype(str)
    df["source"] = df["source"].fillna("").astype(str)
    df["pixel_size_um"] = _numeric(df["pixel_size_um"], "pixel_size_um", where)
    for col in df.columns[len(CORE_COLUMNS):]:
        df[col] = _infer(df[col])
    return df


def _absolute(paths: str, base: Path) -> str:
    parts = [p for p in paths.split(SEP) if p]
    return SEP.join(p if os.path.isabs(p) else os.path.normpath(base / p) for p in parts)


def _numeric(col: pd.Series, name: str, where: str) -> pd.Series:
    try:
        return pd.to_numeric(col.replace("", np.nan))
    except (ValueError, TypeError) as err:
        raise BadInputError(
            f"column {name} holds non-numbers ({err})", "use a number or leave it empty", where
        ) from err


def _infer(col: pd.Series) -> pd.Series:
    """Numbers become numeric unless zero-padded codes (well '01'); empty -> missing."""
    col = col.replace("", np.nan)
    text = col.dropna().astype(str)
    if text.empty or text.str.match(r"^-?0\d").any():
        return col
    try:
        return pd.to_numeric(col)
    except (ValueError, TypeError):
        return col


def channel_counts(df: pd.DataFrame) -> Counter[str]:
    """Histogram of channels per row ("?" where a single file's channels are not listed)."""
    counts: Counter[str] = Counter()
    for paths, channels in zip(df["paths"], df["channels"], strict=True):
        n_names = len(str(channels).split(SEP)) if isinstance(channels, str) and channels else 0
        n_paths = len([p for p in str(paths).split(SEP) if p])
        counts[str(n_names or n_paths) if n_names or n_paths > 1 else "?"] += 1
    return counts


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts with string keys."""
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]
