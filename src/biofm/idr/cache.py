"""An on-disk byte cache for remote objects (OME-Zarr chunks, metadata), safe across processes.

Layout: ``root/ab/abcdef...`` where ``abcdef...`` is the sha256 hex digest of the key (a URL);
raw remote names never reach the file system. Writes go to a temp file in the same folder and
are renamed into place (``os.replace`` is atomic on POSIX and Windows), so a reader in another
worker process sees either nothing or the complete object. Temp files left by a killed
process start with ``.tmp-`` and are never read; eviction removes them once stale.

The size cap is enforced by evicting least-recently-used files (a hit refreshes the file's
mtime). Each process tracks its own writes and rescans the folder when its running total
passes the cap (and every ``rescan_every`` writes), so with many writer processes the cap
is soft by at most the bytes written between rescans.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from biofm.core.errors import BadInputError

_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0


@dataclass(frozen=True)
class CacheStats:
    """Counters of one `ChunkCache` instance (this process only)."""

    hits: int
    misses: int
    puts: int
    evictions: int


class ChunkCache:
    """Key (str) -> bytes on disk under ``root``, at most ``max_bytes`` (soft across processes).

    ``evict_to`` (fraction of the cap) is where an eviction pass stops, so passes are rare.
    """

    def __init__(
        self, root: str | Path, max_bytes: int, evict_to: float = 0.9, rescan_every: int = 256
    ) -> None:
        if max_bytes <= 0:
            raise BadInputError(f"max_bytes={max_bytes} is not positive", "pass a size in bytes")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.evict_to = float(evict_to)
        self.rescan_every = max(1, int(rescan_every))
        self._lock = threading.Lock()
        self._hits = self._misses = self._puts = self._evictions = 0
        self._total = self._scan_total()
        self._since_scan = 0

    def path_for(self, key: str) -> Path:
        """The file holding ``key``: ``root/<2 hex>/<64 hex>``."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / digest

    def get(self, key: str) -> bytes | None:
        """The cached bytes of ``key`` (refreshing its recency), or None."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                self._misses += 1
            return None
        with contextlib.suppress(OSError):  # the file may have just been evicted elsewhere
            os.utime(path)  # LRU recency
        with self._lock:
            self._hits += 1
        return data

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically; objects larger than the cap are skipped."""
        if len(data) > self.max_bytes:
            return
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._puts += 1
            self._total += len(data)
            self._since_scan += 1
            due = self._total > self.max_bytes or self._since_scan >= self.rescan_every
        if due:
            self.evict()

    def discard(self, key: str) -> None:
        """Remove ``key`` (e.g. bytes that turned out to be corrupt); absent keys are fine."""
        self.path_for(key).unlink(missing_ok=True)

    def evict(self) -> int:
        """Rescan the folder and delete least-recently-used files until under the cap.

        Returns the bytes now held. Files deleted meanwhile by other processes are skipped.
        """
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * self.evict_to) if total > self.max_bytes else total
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= target:
                break
            try:
                path.unlink()
                total -= size
                with self._lock:
                    self._evictions += 1
            except FileNotFoundError:  # another process evicted it first
                total -= size
        with self._lock:
            self._total, self._since_scan = total, 0
        return total

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached file; stale temp files are removed."""
        now = time.time()
        out: list[tuple[float, int, Path]] = []
        for shard in _scandir(self.root):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(shard.path)):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(_TMP_PREFIX):
                    if now - st.st_mtime > _STALE_TMP_S:
                        Path(entry.path).unlink(missing_ok=True)
                    continue
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def total_bytes(self) -> int:
        """Bytes held now (a fresh scan, counting every process's files)."""
        return self._scan_total()

    def stats(self) -> CacheStats:
        """Hits, misses, puts and evictions of this instance."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._puts, self._evictions)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
