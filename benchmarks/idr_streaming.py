"""Streaming loader vs one request at a time: crops/s from OME-Zarr served over HTTP with latency.

Fields are written as NGFF 0.4 images (Zarr v2) and served by the loopback stand-in IDR server,
which delays every request by ``--latency-ms``. Each field is read through
``open_remote_image`` (metadata + only the chunks the region overlaps) by a
``StreamingFieldDataset``, and the same crops are timed in these configurations:

- ``one_at_a_time``: one fetch thread and a client allowing one request in flight (baseline);
- ``streaming``: the defaults, 8 fields in flight and at most 8 requests in flight;
- ``streaming_4crops``: the same with 4 smaller crops per field (one fetch serves 4 crops);
- ``cache_cold`` / ``cache_hit``: streaming through an on-disk ``ChunkCache``, first to fill it,
  then again over the same crops;
- ``no_latency``: streaming with the server's latency set to 0 (the CPU-bound ceiling).

``round_trip_ms`` is the measured time of one small request with nothing else in flight: the
injected latency plus the server's and client's own overhead.

For each: crops, seconds, crops/s, requests the server saw (chunks, metadata and 404 answers),
the peak number of requests in flight at the server, a checksum of every crop's pixels and
the ratio of crops/s to the baseline. Prints a table; saves JSON.

    python benchmarks/idr_streaming.py --json benchmarks/results/idr_streaming_cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from biofm.core.sample import Sample
from biofm.data.collate import Skipped
from biofm.data.streaming import StreamingFieldDataset
from biofm.idr._standin_data import write_test_image
from biofm.idr.cache import ChunkCache
from biofm.idr.http import IDRClient
from biofm.idr.pixels import open_remote_image
from biofm.idr.testing import FILES_PREFIX, StandInIDR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BIOFM_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL_SITE = SHARED_DATA / "cellpainting_site_bbbc022"
# file stem -> channel name of the vocabulary (Cell Painting, BBBC022)
REAL_CHANNELS = {
    "Hoechst": "DNA",
    "ERSyto": "ER",
    "ERSytoBleed": "RNA",
    "Ph_golgi": "AGP",
    "Mito": "Mito",
}
METADATA_NAMES = (".zgroup", ".zattrs", ".zarray", ".zmetadata", "zarr.json")


# ------------------------------------------------------------------ test data
def source_planes(size: int, seed: int) -> tuple[np.ndarray, list[str], str]:
    """(C, H, W) uint16 planes at least ``size`` square, their names and where they came from:
    the BBBC022 Cell Painting site when present, else smooth generated blobs with noise."""
    if REAL_SITE.is_dir() and all((REAL_SITE / f"{s}.tif").is_file() for s in REAL_CHANNELS):
        import tifffile

        planes = np.stack([tifffile.imread(REAL_SITE / f"{s}.tif") for s in REAL_CHANNELS])
        if min(planes.shape[-2:]) >= size:
            source = f"BBBC022 Cell Painting site ({REAL_SITE.name})"
            return planes.astype(np.uint16), list(REAL_CHANNELS.values()), source
    rng = np.random.default_rng(seed)
    n = size + 64
    yy, xx = np.mgrid[0:n, 0:n]
    planes = np.zeros((5, n, n), np.float64)
    for c in range(5):
        for cy, cx in rng.uniform(0, n, (40, 2)):
            planes[c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (6 + 3 * c) ** 2))
    planes = 200 + 2000 * planes / planes.max() + rng.normal(0, 20, planes.shape)
    return planes.clip(0, 65535).astype(np.uint16), list(REAL_CHANNELS.values()), "generated"


def write_fields(root: Path, n: int, size: int, chunk: int, seed: int) -> tuple[list[str], str]:
    """``n`` images ``field_{i}.zarr`` (C, size, size), chunks (1, chunk, chunk), under ``root``;
    each a different window (and flip) of the source planes. Returns their relative paths."""
    planes, names, source = source_planes(size, seed)
    h, w = planes.shape[-2:]
    rels = []
    for i in range(n):
        y0 = (i * 7) % (h - size + 1)
        x0 = (i * 37) % (w - size + 1)
        px = planes[:, y0 : y0 + size, x0 : x0 + size]
        if i % 2:
            px = px[:, ::-1]
        if (i // 2) % 2:
            px = px[:, :, ::-1]
        rel = f"field_{i:03d}.zarr"
        write_test_image(
            root / rel,
            np.ascontiguousarray(px),
            "cyx",
            names,
            (1, chunk, chunk),
            zarr_format=2,
            levels=2,
        )
        rels.append(rel)
    return rels, source


# ------------------------------------------------------------------ loading
@dataclass(frozen=True)
class Region:
    """The block of every field that is read: ``[y:y+h, x:x+w]``, all channels."""

    y: int
    x: int
    h: int
    w: int


class RemoteRegionLoader:
    """Picklable ``load_fn``: opens ``ref["path"]`` on the server and reads ``region``.

    The `IDRClient` (and `ChunkCache`, when ``cache_root`` is given) is created on first use
    and shared by the fetch threads; pickling drops it, so each process makes its own.
    """

    def __init__(
        self,
        base_url: str,
        region: Region,
        max_in_flight: int = 8,
        cache_root: Path | None = None,
        cache_bytes: int = 1 << 30,
    ) -> None:
        self.base_url = base_url
        self.region = region
        self.max_in_flight = max_in_flight
        self.cache_root = cache_root
        self.cache_bytes = cache_bytes
        self._client: IDRClient | None = None
        self._cache: ChunkCache | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _cache=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open(self) -> tuple[IDRClient, ChunkCache | None]:
        with self._lock:
            if self._client is None:
                self._client = IDRClient(self.base_url, max_in_flight=self.max_in_flight)
                if self.cache_root is not None:
                    self._cache = ChunkCache(self.cache_root, self.cache_bytes)
            return self._client, self._cache

    def __call__(self, ref: dict[str, Any]) -> Sample:
        client, cache = self._open()
        image = open_remote_image(client, ref["path"], cache)
        r = self.region
        return image.to_sample(y=r.y, x=r.x, h=r.h, w=r.w)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# ------------------------------------------------------------------ one configuration
@dataclass(frozen=True)
class Variant:
    """One loader configuration; every field not given is the streaming default."""

    name: str
    description: str
    max_in_flight: int = 8
    prefetch: int = 8
    crops_per_field: int = 1
    crop_divisor: int = 1  # crop side = region side // crop_divisor
    cache: bool = False
    latency: bool = True


def request_kinds(paths: Counter[str], files_root: Path) -> dict[str, int]:
    """Split server hits into chunk and metadata requests and those answered 404."""
    out = {"chunk": 0, "metadata": 0, "not_found": 0}
    for path, count in paths.items():
        rel = path[len(FILES_PREFIX) :] if path.startswith(FILES_PREFIX) else path
        out["metadata" if rel.rsplit("/", 1)[-1] in METADATA_NAMES else "chunk"] += count
        if not (files_root / rel).is_file():
            out["not_found"] += count
    return out


def run_variant(
    idr: StandInIDR,
    files_root: Path,
    refs: list[dict[str, Any]],
    v: Variant,
    region: Region,
    seed: int,
    cache_root: Path | None,
    latency_s: float,
) -> dict[str, Any]:
    """Iterate one epoch of ``refs`` under configuration ``v``; timings, requests, checksum."""
    loader = RemoteRegionLoader(idr.url, region, v.max_in_flight, cache_root if v.cache else None)
    crop = min(region.h, region.w) // v.crop_divisor
    ds = StreamingFieldDataset(
        refs,
        loader,
        crop_size=crop,
        crops_per_field=v.crops_per_field,
        seed=seed,
        prefetch=v.prefetch,
        rank=0,
        world_size=1,
    )
    before = Counter(idr.hits)
    idr.max_in_flight = 0
    idr.latency_s = latency_s if v.latency else 0.0
    digests: dict[tuple[int, int], str] = {}
    skipped = 0
    t0 = time.perf_counter()
    try:
        for item in ds:
            if isinstance(item, Skipped) or item is None:
                skipped += 1
                continue
            pixels = item["views"][0][0]
            key = (int(item["meta"]["field_index"]), int(item["meta"]["crop_index"]))
            digests[key] = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
        seconds = time.perf_counter() - t0
    finally:
        idr.latency_s = latency_s
        loader.close()
    delta = Counter(idr.hits)
    delta.subtract(before)
    delta = Counter({p: c for p, c in delta.items() if c > 0})
    kinds = request_kinds(delta, files_root)
    whole = hashlib.sha256("".join(f"{k}{digests[k]}" for k in sorted(digests)).encode())
    crops = len(digests)
    return {
        "name": v.name,
        "description": v.description,
        "max_in_flight_client": v.max_in_flight,
        "prefetch": v.prefetch,
        "crops_per_field": v.crops_per_field,
        "crop_size": crop,
        "cache": v.cache,
        "latency_ms": 1000 * (latency_s if v.latency else 0.0),
        "fields": len(refs),
        "crops": crops,
        "skipped": skipped,
        "seconds": seconds,
        "crops_per_s": crops / max(seconds, 1e-9),
        "fields_per_s": len(refs) / max(seconds, 1e-9),
        "requests": sum(delta.values()),
        "chunk_requests": kinds["chunk"],
        "metadata_requests": kinds["metadata"],
        "not_found_requests": kinds["not_found"],
        "requests_per_field": sum(delta.values()) / max(len(refs), 1),
        "server_max_in_flight": idr.max_in_flight,
        "checksum": whole.hexdigest()[:16],
    }


VARIANTS = [
    Variant("one_at_a_time", "1 fetch thread, client max_in_flight=1", 1, 1),
    Variant("streaming", "prefetch=8, client max_in_flight=8 (defaults)"),
    Variant(
        "streaming_4crops",
        "as streaming, 4 crops of half the region per field",
        crops_per_field=4,
        crop_divisor=2,
    ),
    Variant("cache_cold", "as streaming, through an empty ChunkCache", cache=True),
    Variant("cache_hit", "as streaming, same crops again from the filled ChunkCache", cache=True),
    Variant("no_latency", "as streaming, server latency 0 (CPU-bound ceiling)", latency=False),
]


def round_trip_ms(idr: StandInIDR, path: str, n: int = 10) -> float:
    """Median milliseconds of one GET of ``path`` with nothing else in flight."""
    times = []
    with IDRClient(idr.url, max_in_flight=1) as client:
        client.get_bytes(path)  # connect outside the timing
        for _ in range(n):
            t0 = time.perf_counter()
            client.get_bytes(path)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


# ------------------------------------------------------------------ the benchmark
def machine() -> dict[str, Any]:
    """Where the benchmark ran, and the zarr settings that bound its I/O concurrency."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "zarr": zarr.__version__,
        "zarr_threading_max_workers": zarr.config.get("threading.max_workers"),
        "zarr_async_concurrency": zarr.config.get("async.concurrency"),
        "asyncio_default_threads": min(32, (os.cpu_count() or 1) + 4),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the fields, serve them, time every variant; the result as a JSON-ready dict."""
    if args.region % args.chunk or args.size < 2 * args.region:
        raise SystemExit("--region must be a multiple of --chunk and at most half of --size")
    # an interior block aligned to the chunk grid: exactly one chunk per channel when
    # region == chunk, away from the image edges
    region = Region(args.region, args.region, args.region, args.region)
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="biofm_idr_bench_"))
    try:
        files_root = tmp / "zarr"
        t0 = time.perf_counter()
        rels, source = write_fields(files_root, args.fields, args.size, args.chunk, args.seed)
        write_s = time.perf_counter() - t0
        refs = [{"id": Path(r).stem, "path": f"zarr/{r}"} for r in rels]
        latency_s = args.latency_ms / 1000.0
        rows = []
        with StandInIDR(latency_s=latency_s, files_root=files_root) as idr:
            rtt = round_trip_ms(idr, f"/zarr/{rels[0]}/.zattrs")
            warm = Variant("warm_up", "", 8, 8)
            run_variant(idr, files_root, refs[:2], warm, region, args.seed, None, latency_s)
            for v in VARIANTS:
                rows.append(
                    run_variant(
                        idr, files_root, refs, v, region, args.seed, tmp / "cache", latency_s
                    )
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["crops_per_s"]
    for row in rows:
        row["ratio_vs_one_at_a_time"] = row["crops_per_s"] / base
    by_name = {r["name"]: r for r in rows}
    one_crop = [r["checksum"] for r in rows if r["crops_per_field"] == 1]
    return {
        "benchmark": "idr_streaming",
        "machine": info,
        "pixels_source": source,
        "fields": args.fields,
        "channels": 5,
        "image_size": args.size,
        "dtype": "uint16",
        "chunks": [1, args.chunk, args.chunk],
        "zarr_format": 2,
        "levels": 2,
        "region": {
            "y": region.y,
            "x": region.x,
            "h": region.h,
            "w": region.w,
            "chunks_per_channel": (args.region // args.chunk) ** 2,
        },
        "latency_ms": args.latency_ms,
        "round_trip_ms": rtt,
        "seed": args.seed,
        "write_seconds": write_s,
        "same_crops_across_variants": len(set(one_crop)) == 1,
        "streaming_over_one_at_a_time": by_name["streaming"]["ratio_vs_one_at_a_time"],
        "target_ratio": 6.0,
        "ideal_ratio": 8.0,
        "results": rows,
    }


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    r = res["region"]
    print(
        f"{res['fields']} fields, {res['channels']} x {res['image_size']}^2 uint16, chunks "
        f"{tuple(res['chunks'])}, zarr v2 ({res['pixels_source']}); region y={r['y']} "
        f"x={r['x']} {r['h']}x{r['w']} ({r['chunks_per_channel']} chunk(s)/channel, all "
        f"channels); server latency {res['latency_ms']:g} ms/request, measured round trip "
        f"{res['round_trip_ms']:.1f} ms"
    )
    print(f"{m['cpus']} CPUs, {m['platform']}, torch {m['torch']}, zarr {m['zarr']}")
    head = (
        "variant",
        "crops",
        "s",
        "crops/s",
        "ratio",
        "requests",
        "chunk",
        "meta",
        "404",
        "req/field",
        "peak in flight",
    )
    print(
        f"{head[0]:<17}{head[1]:>6}{head[2]:>8}{head[3]:>9}{head[4]:>7}{head[5]:>9}"
        f"{head[6]:>7}{head[7]:>6}{head[8]:>6}{head[9]:>10}{head[10]:>15}"
    )
    for row in res["results"]:
        print(
            f"{row['name']:<17}{row['crops']:>6}{row['seconds']:>8.2f}"
            f"{row['crops_per_s']:>9.1f}{row['ratio_vs_one_at_a_time']:>6.2f}x"
            f"{row['requests']:>9}{row['chunk_requests']:>7}{row['metadata_requests']:>6}"
            f"{row['not_found_requests']:>6}{row['requests_per_field']:>10.1f}"
            f"{row['server_max_in_flight']:>15}"
        )
    print(
        f"streaming / one at a time: {res['streaming_over_one_at_a_time']:.2f}x (target "
        f">= {res['target_ratio']:g}x, ideal {res['ideal_ratio']:g}x); same crops in every "
        f"variant: {res['same_crops_across_variants']}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--fields", type=int, default=48)
    ap.add_argument("--latency-ms", type=float, default=50.0, help="server delay per request")
    ap.add_argument("--size", type=int, default=512, help="image height and width")
    ap.add_argument("--chunk", type=int, default=256, help="chunk height and width")
    ap.add_argument(
        "--region",
        type=int,
        default=256,
        help="side of the block read per field, at (region, region)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a fast check: at most 8 fields of 128 px, chunks and region 32, latency at most 5 ms",
    )
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.chunk, args.region = 128, 32, 32
        args.fields = min(args.fields, 8)
        args.latency_ms = min(args.latency_ms, 5.0)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    res = run(args)
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
