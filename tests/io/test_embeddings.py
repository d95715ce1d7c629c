"""Embedding parquet tables: round trip, column layout, atomic write, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biofm.core.errors import BadInputError
from biofm.io.embeddings import emb_column_names, read_embeddings, write_embeddings


def test_round_trip_and_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 3))
    meta = pd.DataFrame(
        {"well": list("ABCDE"), "plate": [1, 1, 2, 2, 3]}, index=[10, 11, 12, 13, 14]
    )
    out = write_embeddings(tmp_path / "sub" / "e.parquet", emb, meta)
    assert out.is_file()
    schema = pq.read_schema(out)
    assert schema.names == ["well", "plate", "emb_0000", "emb_0001", "emb_0002"]
    assert all(schema.field(c).type == pa.float32() for c in schema.names[2:])
    got, got_meta = read_embeddings(out)
    assert got.dtype == np.float32 and got.shape == (5, 3)
    np.testing.assert_array_equal(got, emb.astype(np.float32))
    pd.testing.assert_frame_equal(got_meta, meta.reset_index(drop=True))
    assert [p.name for p in out.parent.iterdir()] == ["e.parquet"]  # no temp file left


def test_without_metadata_and_wide(tmp_path: Path) -> None:
    emb = np.arange(3 * 12, dtype=np.float32).reshape(3, 12)
    write_embeddings(tmp_path / "e.parquet", emb, None)
    got, meta = read_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(got, emb)
    assert meta.shape == (3, 0)
    assert emb_column_names(10001)[-1] == "emb_10000"
    assert emb_column_names(2) == ["emb_0000", "emb_0001"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    write_embeddings(path, np.zeros((2, 2)), pd.DataFrame({"a": [1, 2]}))
    write_embeddings(path, np.ones((4, 3)), pd.DataFrame({"b": list("wxyz")}))
    got, meta = read_embeddings(path)
    assert got.shape == (4, 3) and list(meta.columns) == ["b"]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="one metadata row"):
        write_embeddings(tmp_path / "e.parquet", np.zeros((3, 2)), pd.DataFrame({"a": [1]}))
    with pytest.raises(BadInputError, match="reserved prefix"):
        write_embeddings(tmp_path / "e.parquet", np.zeros((1, 2)), pd.DataFrame({"emb_x": [1]}))
    with pytest.raises(BadInputError, match="2-D"):
        write_embeddings(tmp_path / "e.parquet", np.zeros(3), pd.DataFrame({"a": [1, 2, 3]}))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2], "y": [3, 4]}), plain)
    with pytest.raises(BadInputError, match=r"no 'emb_\*' columns.*'x', 'y'"):
        read_embeddings(plain)
    with pytest.raises(BadInputError, match="not found"):
        read_embeddings(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(BadInputError, match="parquet"):
        read_embeddings(junk)


def _loads_torch(module: str) -> bool:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_io_does_not_import_torch() -> None:
    source = Path(__file__).resolve().parents[2] / "src" / "biofm" / "io" / "embeddings.py"
    assert "import torch" not in source.read_text()
    if _loads_torch("biofm.core.errors"):
        pytest.skip("biofm.core's package import loads torch, so no module under it can avoid it")
    assert not _loads_torch("biofm.io.embeddings")
