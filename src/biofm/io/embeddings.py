"""Embedding tables: one row per sample, as parquet (small and medium sets) or Zarr (large sets).

Parquet: metadata columns first, then float32 ``emb_0000``... and, for per-block features, one
column group per block, ``block3_0000``... Embedding columns are named with a zero-padded index
(at least 4 digits), so their lexical order is their numeric order.

Zarr (a ``.zarr`` folder): arrays ``emb`` (N, D) and ``blocks/<k>`` (N, D_k), float32, chunked
by rows, with the metadata in ``metadata.parquet`` inside the folder. :class:`ZarrTableWriter`
fills it block of rows by block of rows, so a set larger than memory can be written.

Writes are atomic (temp file or folder, then rename). :func:`read_embeddings` and
:func:`read_blocks` dispatch on the suffix.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from biofm.core.errors import BadInputError

EMB_PREFIX = "emb_"
ZARR_META = "metadata.parquet"
_BLOCK_COL = re.compile(r"^block(\d+)_(\d+)$")
_ROW_CHUNK_BYTES = 8 << 20


def emb_column_names(dim: int, prefix: str = EMB_PREFIX) -> list[str]:
    """``emb_0000`` ... for ``dim`` dimensions (wider padding above 10,000 dimensions)."""
    width = max(4, len(str(max(dim - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(dim)]


def block_prefix(block: int) -> str:
    """Column prefix of one block's features: ``block3_``."""
    return f"block{int(block)}_"


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a Zarr embedding store (by its suffix)."""
    return Path(path).suffix.lower() == ".zarr"


def _check(
    emb: np.ndarray, meta: pd.DataFrame, where: str, blocks: Mapping[int, np.ndarray] | None = None
) -> None:
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
    clash = [
        str(c) for c in meta.columns if str(c).startswith(EMB_PREFIX) or _BLOCK_COL.match(str(c))
    ]
    if clash:
        raise BadInputError(
            f"metadata columns {clash[:5]} use the reserved prefix '{EMB_PREFIX}' or 'blockK_'",
            "rename those metadata columns",
            where,
        )
    for k, arr in (blocks or {}).items():
        if arr.ndim != 2 or len(arr) != len(emb):
            raise BadInputError(
                f"block {k} features have shape {arr.shape}",
                f"pass one row per embedding row ({len(emb)})",
                where,
            )


def write_embeddings(
    path: str | os.PathLike[str],
    emb: np.ndarray,
    meta: pd.DataFrame | None = None,
    blocks: Mapping[int, np.ndarray] | None = None,
) -> Path:
    """Write ``meta`` plus float32 embeddings (and per-block features) atomically.

    A ``.zarr`` path writes a Zarr store, anything else parquet. The metadata index is not
    stored (reset it first to keep it as a column).
    """
    out = Path(path)
    arr = np.asarray(emb, dtype=np.float32)
    meta = pd.DataFrame(index=range(len(arr))) if meta is None else meta
    blk = {int(k): np.asarray(v, dtype=np.float32) for k, v in (blocks or {}).items()}
    _check(arr, meta, str(out), blk)
    if is_zarr(out):
        dims = {k: v.shape[1] for k, v in blk.items()}
        with ZarrTableWriter(out, len(arr), arr.shape[1], meta, dims) as writer:
            writer.write(0, arr, blk)
        return out
    table = _to_table(arr, meta, blk)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _to_table(arr: np.ndarray, meta: pd.DataFrame, blocks: Mapping[int, np.ndarray]) -> pa.Table:
    groups = [(EMB_PREFIX, arr)] + [(block_prefix(k), v) for k, v in sorted(blocks.items())]
    names: list[str] = []
    columns: list[pa.Array] = []
    for prefix, values in groups:
        names += emb_column_names(values.shape[1], prefix)
        columns += [pa.array(np.ascontiguousarray(c)) for c in values.T]
    if meta.shape[1] == 0:
        return pa.Table.from_arrays(columns, names=names)
    table = pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False)
    for name, column in zip(names, columns, strict=True):
        table = table.append_column(name, column)
    return table


def _missing(src: Path) -> BadInputError:
    return BadInputError(
        "embedding file not found", "check the path (write it with `biofm embed`)", str(src)
    )


def _read_table(src: Path, columns: list[str] | None = None) -> pa.Table:
    if not src.is_file():
        raise _missing(src)
    try:
        return pq.read_table(src, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise BadInputError(
            f"not a readable parquet file ({err})", "pass a parquet embedding table", str(src)
        ) from err


def _stack(table: pa.Table, cols: list[str], prefix: str) -> np.ndarray:
    cols = sorted(cols, key=lambda c: _col_index(c, prefix))
    out = np.empty((table.num_rows, len(cols)), dtype=np.float32)
    for j, name in enumerate(cols):
        out[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    return out


def read_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Read a table written by :func:`write_embeddings`: ``(emb float32 (N, D), meta)``.

    Per-block columns are left out of ``meta`` (read them with :func:`read_blocks`).
    """
    src = Path(path)
    if is_zarr(src):
        group = _open_zarr(src)
        return np.asarray(group["emb"][:], dtype=np.float32), _zarr_meta(src, group)
    table = _read_table(src)
    cols = [c for c in table.column_names if c.startswith(EMB_PREFIX)]
    if not cols:
        raise BadInputError(
            f"no '{EMB_PREFIX}*' columns (columns: {table.column_names[:20]})",
            "pass a table written by biofm.io.embeddings.write_embeddings",
            str(src),
        )
    emb = _stack(table, cols, EMB_PREFIX)
    blocks = [c for c in table.column_names if _BLOCK_COL.match(c)]
    meta = table.drop_columns(cols + blocks).to_pandas()
    if meta.shape[1] == 0:
        meta = pd.DataFrame(index=range(table.num_rows))
    return emb, meta


def read_blocks(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Per-block features ``{block: (N, D_k) float32}`` of a table written with blocks."""
    src = Path(path)
    if is_zarr(src):
        group = _open_zarr(src)
        if "blocks" not in group:
            return {}
        sub: Any = group["blocks"]
        return {
            int(k): np.asarray(sub[k][:], dtype=np.float32)
            for k in sorted(sub.array_keys(), key=int)
        }
    names = pq.read_schema(src).names if src.is_file() else _read_table(src).column_names
    by_block: dict[int, list[str]] = {}
    for c in names:
        m = _BLOCK_COL.match(c)
        if m:
            by_block.setdefault(int(m.group(1)), []).append(c)
    out = {}
    for k, cols in sorted(by_block.items()):
        out[k] = _stack(_read_table(src, cols), cols, block_prefix(k))
    return out


def _col_index(name: str, prefix: str = EMB_PREFIX) -> int:
    suffix = name[len(prefix) :]
    if not suffix.isdigit():
        raise BadInputError(
            f"column {name!r} has the embedding prefix but no numeric index",
            f"name embedding columns {prefix}0000, {prefix}0001, ...",
        )
    return int(suffix)


# ---------------------------------------------------------------------------------- Zarr
def _open_zarr(src: Path) -> Any:
    import zarr

    if not (src / "zarr.json").is_file():
        raise (
            _missing(src)
            if not src.exists()
            else BadInputError(
                "not a Zarr embedding store (no zarr.json)",
                "pass a .zarr written by biofm embed",
                str(src),
            )
        )
    group = zarr.open_group(str(src), mode="r")
    if "emb" not in group:
        raise BadInputError(
            "the Zarr store has no 'emb' array",
            "pass a .zarr written by biofm.io.embeddings",
            str(src),
        )
    return group


def _zarr_meta(src: Path, group: Any) -> pd.DataFrame:
    n = int(group["emb"].shape[0])
    meta_path = src / ZARR_META
    meta = pq.read_table(meta_path).to_pandas() if meta_path.is_file() else pd.DataFrame()
    return pd.DataFrame(index=range(n)) if meta.shape[1] == 0 else meta


class ZarrTableWriter:
    """Write a ``.zarr`` embedding store by row ranges; it appears at ``path`` on ``close``.

    ``with ZarrTableWriter(path, n, dim, meta, {block: dim}) as w: w.write(start, emb, blocks)``
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n: int,
        dim: int,
        meta: pd.DataFrame,
        block_dims: Mapping[int, int] | None = None,
    ) -> None:
        import zarr

        self.path = Path(path)
        if len(meta) != n:
            raise BadInputError(
                f"{len(meta)} metadata rows for {n} embeddings",
                "pass one metadata row per embedding row",
                str(self.path),
            )
        _check(np.zeros((0, dim), np.float32), meta.iloc[:0], str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        root = zarr.open_group(str(self.tmp), mode="w")
        root.attrs["format"] = "biofm-embeddings/1"
        self.arrays: dict[str | int, Any] = {"emb": self._array(root, "emb", n, dim)}
        if block_dims:
            sub = root.create_group("blocks")
            for k, d in sorted(block_dims.items()):
                self.arrays[int(k)] = self._array(sub, str(int(k)), n, d)
        pq.write_table(
            pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False),
            self.tmp / ZARR_META,
        )

    @staticmethod
    def _array(group: Any, name: str, n: int, dim: int) -> Any:
        rows = max(1, min(max(n, 1), _ROW_CHUNK_BYTES // (4 * max(dim, 1))))
        return group.create_array(
            name, shape=(n, dim), chunks=(rows, dim), dtype="float32", fill_value=np.nan
        )

    def write(
        self, start: int, emb: np.ndarray, blocks: Mapping[int, np.ndarray] | None = None
    ) -> None:
        """Rows ``start .. start + len(emb)`` of ``emb`` and of each block array."""
        stop = start + len(emb)
        self.arrays["emb"][start:stop] = np.asarray(emb, dtype=np.float32)
        for k, v in (blocks or {}).items():
            self.arrays[int(k)][start:stop] = np.asarray(v, dtype=np.float32)

    def close(self) -> None:
        """Move the finished store into place (replacing an older one)."""
        old = self.path.with_name(f".{self.path.name}.{os.getpid()}.old")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ZarrTableWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
