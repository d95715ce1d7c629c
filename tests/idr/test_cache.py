"""Tests of the on-disk chunk cache: round trip, LRU cap, multi-process writes, stray temp files."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from biofm.idr.cache import ChunkCache


def test_round_trip_and_stats(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=1 << 20)
    assert cache.get("https://example.org/a/0/0") is None
    cache.put("https://example.org/a/0/0", b"chunk bytes")
    assert cache.get("https://example.org/a/0/0") == b"chunk bytes"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.puts) == (1, 1, 1)


def test_file_names_are_hashed_and_sharded(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=1 << 20)
    cache.put("../../etc/passwd?x=1", b"x")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert len(files[0].name) == 64 and files[0].parent.name == files[0].name[:2]
    assert files[0].parent.parent == tmp_path


def test_cap_respected_after_many_puts_lru_kept(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=10_000)
    cache.put("hot", b"h" * 500)
    for i in range(100):
        cache.put(f"key{i}", bytes([i % 256]) * 500)
        old = time.time() - 1000 + i
        if i % 10 == 0:  # keep 'hot' the most recently used
            assert cache.get("hot") is not None
        os.utime(cache.path_for(f"key{i}"), (old, old))
    assert cache.total_bytes() <= 10_000
    assert cache.get("hot") == b"h" * 500
    assert cache.get("key99") == bytes([99]) * 500
    assert cache.get("key0") is None
    assert cache.stats().evictions > 0


def test_object_larger_than_cap_is_not_stored(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=100)
    cache.put("big", b"x" * 101)
    assert cache.get("big") is None


def _writer(root: str, seed: int) -> None:
    cache = ChunkCache(root, max_bytes=1 << 24)
    payload = bytes(range(256)) * 2000  # 512 kB: large enough for writes to overlap
    for _ in range(20):
        cache.put("same-key", payload)
        got = cache.get("same-key")
        assert got is None or got == payload, f"writer {seed} saw a partial file"


def test_concurrent_puts_of_same_key_leave_one_valid_file(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    cache = ChunkCache(tmp_path, max_bytes=1 << 24)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and not files[0].name.startswith(".tmp-")
    assert cache.get("same-key") == bytes(range(256)) * 2000


def test_truncated_stray_temp_file_is_ignored(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path, max_bytes=1 << 20)
    target = cache.path_for("k")
    target.parent.mkdir(parents=True)
    stray = target.parent / ".tmp-killedwriter"
    stray.write_bytes(b"trunc")  # a writer died mid-write: never renamed into place
    assert cache.get("k") is None
    cache.put("k", b"complete")
    assert cache.get("k") == b"complete"
    old = time.time() - 7200
    os.utime(stray, (old, old))
    cache.evict()
    assert not stray.exists()
    assert cache.total_bytes() == len(b"complete")
