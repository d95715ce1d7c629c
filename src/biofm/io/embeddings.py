"""Embedding tables: one parquet row per sample, metadata columns first, then ``emb_0000``...

Embedding columns are float32 and named ``emb_`` + a zero-padded index (at least 4 digits), so
their lexical order is their numeric order. Writes are atomic (temp file, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from biofm.core.errors import BadInputError

EMB_PREFIX = "emb_"


def emb_column_names(dim: int) -> list[str]:
    """``emb_0000`` ... for ``dim`` dimensions (wider padding above 10,000 dimensions)."""
    width = max(4, len(str(max(dim - 1, 0))))
    return [f"{EMB_PREFIX}{i:0{width}d}" for i in range(dim)]


def _check(emb: np.ndarray, meta: pd.DataFrame, where: str) -> None:
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise BadInputError(
            f"embeddings have shape {emb.shape}", "pass a 2-D array (n_samples, dim)", where
        )
    if len(meta) != len(emb):
        raise BadInputError(
            f"{len(meta)} metadata rows for {len(emb)} embeddings",
            "pass one metadata row per embedding row",
            where,
        )
    clash = [str(c) for c in meta.columns if str(c).startswith(EMB_PREFIX)]
    if clash:
        raise BadInputError(
            f"metadata columns {clash[:5]} use the reserved prefix '{EMB_PREFIX}'",
            "rename those metadata columns",
            where,
        )


def write_embeddings(
    path: str | os.PathLike[str], emb: np.ndarray, meta: pd.DataFrame | None = None
) -> Path:
    """Write ``meta`` columns then float32 ``emb_XXXX`` columns to parquet, atomically.

    The metadata index is not stored (reset it first to keep it as a column).
    """
    out = Path(path)
    arr = np.asarray(emb, dtype=np.float32)
    meta = pd.DataFrame(index=range(len(arr))) if meta is None else meta
    _check(arr, meta, str(out))
    table = _to_table(arr, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _to_table(arr: np.ndarray, meta: pd.DataFrame) -> pa.Table:
    columns = [pa.array(np.ascontiguousarray(c)) for c in arr.T]
    names = emb_column_names(arr.shape[1])
    if meta.shape[1] == 0:
        return pa.Table.from_arrays(columns, names=names)
    table = pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False)
    for name, column in zip(names, columns, strict=True):
        table = table.append_column(name, column)
    return table


def read_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Read a table written by :func:`write_embeddings`: ``(emb float32 (N, D), meta)``."""
    src = Path(path)
    if not src.is_file():
        raise BadInputError(
            "embedding file not found", "check the path (write it with `biofm embed`)", str(src)
        )
    try:
        table = pq.read_table(src)
    except (pa.ArrowInvalid, OSError) as err:
        raise BadInputError(
            f"not a readable parquet file ({err})", "pass a parquet embedding table", str(src)
        ) from err
    cols = [c for c in table.column_names if c.startswith(EMB_PREFIX)]
    if not cols:
        raise BadInputError(
            f"no '{EMB_PREFIX}*' columns (columns: {table.column_names[:20]})",
            "pass a table written by biofm.io.embeddings.write_embeddings",
            str(src),
        )
    cols.sort(key=_emb_index)
    emb = np.empty((table.num_rows, len(cols)), dtype=np.float32)
    for j, name in enumerate(cols):
        emb[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    meta = table.drop_columns(cols).to_pandas()
    if meta.shape[1] == 0:
        meta = pd.DataFrame(index=range(table.num_rows))
    return emb, meta


def _emb_index(name: str) -> int:
    suffix = name[len(EMB_PREFIX) :]
    if not suffix.isdigit():
        raise BadInputError(
            f"column {name!r} has the embedding prefix but no numeric index",
            f"name embedding columns {EMB_PREFIX}0000, {EMB_PREFIX}0001, ...",
        )
    return int(suffix)
