"""A read-only zarr 3 store over IDR's HTTP endpoints (EBI S3 / webgateway OME-Zarr).

Keys are fetched as ``base_path/key`` through `IDRClient.get_bytes` (retries, at most
``max_in_flight`` requests, run on the client's own pool of ``max_in_flight`` threads so the
limit is reached on any machine), consulting an optional on-disk `ChunkCache` first. A 404
reads as a missing key, which zarr turns into the fill value for chunks; it is remembered by
the client and in the cache (as an empty ``<url>#404`` entry), so probes for metadata that
does not exist are not repeated. Byte ranges are cut from the whole object (no range
requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from biofm.idr.cache import ChunkCache
from biofm.idr.http import IDRClient, IDRError

_NO_KEYS: tuple[str, ...] = ()
_MISSING = "#404"


class IDRZarrStore(Store):
    """Read-only zarr store: key ``k`` is ``GET {client.base_url}{base_path}/{k}``."""

    def __init__(self, client: IDRClient, base_path: str, cache: ChunkCache | None = None) -> None:
        super().__init__(read_only=True)
        self.client = client
        self.base_path = "/" + base_path.strip("/")
        self.cache = cache

    def path(self, key: str) -> str:
        """Request path of ``key`` relative to the client's base URL."""
        return f"{self.base_path}/{key}" if key else self.base_path

    def url(self, key: str) -> str:
        """Full URL of ``key`` (also the cache key)."""
        return self.client.base_url + self.path(key)

    def fetch(self, key: str) -> bytes | None:
        """Bytes of ``key`` from the cache or the server; None when the server says 404."""
        url = self.url(key)
        if url in self.client.missing:
            return None
        if self.cache is not None:
            if (hit := self.cache.get(url)) is not None:
                return hit
            if self.cache.get(url + _MISSING) is not None:
                self.client.missing.add(url)
                return None
        try:
            data = self.client.get_bytes(self.path(key))
        except IDRError as err:
            if err.status == 404:  # remote stores are read-only: it stays missing
                self.client.missing.add(url)
                if self.cache is not None:
                    self.cache.put(url + _MISSING, b"")
                return None
            raise
        if self.cache is not None:
            self.cache.put(url, data)
        return data

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        data = await self._run(key)
        if data is None:
            return None
        return prototype.buffer.from_bytes(_byte_slice(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def _run(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.client.pool, self.fetch, key)

    async def exists(self, key: str) -> bool:
        return await self._run(key) is not None

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def list(self) -> AsyncIterator[str]:
        for key in _NO_KEYS:  # remote HTTP stores cannot be listed
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in _NO_KEYS:
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for key in _NO_KEYS:
            yield key

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    @property
    def supports_listing(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IDRZarrStore)
            and other.client is self.client
            and other.base_path == self.base_path
        )

    def __hash__(self) -> int:
        return hash((id(self.client), self.base_path))

    def __repr__(self) -> str:
        return f"IDRZarrStore({self.url('')!r})"


def _byte_slice(data: bytes, request: ByteRequest | None) -> bytes:
    if isinstance(request, RangeByteRequest):
        return data[request.start : request.end]
    if isinstance(request, OffsetByteRequest):
        return data[request.offset :]
    if isinstance(request, SuffixByteRequest):
        return data[-request.suffix :] if request.suffix else b""
    return data
