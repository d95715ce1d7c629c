"""Tests of biofm.idr. ``IDR_SHARED`` is the real IDR reference folder beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).parents[2].parent / "shared" / "idr"
IDR_SHARED = Path(os.environ.get("BIOFM_SHARED_IDR", _DEFAULT))


def idr_catalog_dir() -> Path:
    """``../shared/idr/catalog``; skips the calling test when it is absent."""
    path = IDR_SHARED / "catalog"
    if not (path / "idr_studies.tsv").is_file():
        pytest.skip(f"IDR catalogue folder {path} is absent (set BIOFM_SHARED_IDR)")
    return path
