"""Smoke test of benchmarks/idr_streaming.py: a tiny run reads the same crops in every variant."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "idr_streaming.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("idr_streaming_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_reads_the_same_crops(tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    out = tmp_path / "idr.json"
    _load().main(["--quick", "--fields", "4", "--latency-ms", "2", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["fields"] == 4 and res["same_crops_across_variants"]
    rows = {r["name"]: r for r in res["results"]}
    assert set(rows) == {
        "one_at_a_time",
        "streaming",
        "streaming_4crops",
        "cache_cold",
        "cache_hit",
        "no_latency",
    }
    for row in rows.values():
        assert row["skipped"] == 0
        assert row["crops"] == 4 * row["crops_per_field"]
        for key in (
            "seconds",
            "crops_per_s",
            "requests",
            "server_max_in_flight",
            "ratio_vs_one_at_a_time",
            "checksum",
        ):
            assert key in row
    one = [r["checksum"] for r in rows.values() if r["crops_per_field"] == 1]
    assert len(set(one)) == 1
    assert rows["one_at_a_time"]["server_max_in_flight"] == 1
    assert rows["cache_hit"]["chunk_requests"] == 0
    assert rows["streaming"]["chunk_requests"] == 4 * 5  # one chunk per channel per field
    assert res["machine"]["cpus"] and res["machine"]["torch"]
