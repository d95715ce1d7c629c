"""From a query such as ``idr:idr0036?plates=2&fields=2`` to the fields to stream, and their pixels.

Query syntax: ``idr:STUDY[/SCREEN][?key=value&...]`` with keys

- ``plates`` (most plates, default all), ``plate`` (a plate name; repeat or comma-separate),
  ``wells`` (most wells per plate, default all), ``fields`` (fields per well, default 1);
- ``api`` (OMERO.web base URL, default ``https://idr.openmicroscopy.org``) and ``zarr`` (base
  URL of the per-image OME-Zarr copies, default ``https://uk1s3.embassy.ebi.ac.uk/idr/zarr/v0.4``);
- ``cache`` (chunk cache folder, default ``$XDG_CACHE_HOME/biofm/idr``; ``none`` = off) and
  ``cache_gb`` (its size cap, default 20);
- ``render=1``: when a field has no OME-Zarr copy, fall back to the webgateway's 8-bit JPEG
  render, each channel windowed to its own stored min..max (lossy; such samples say so in
  ``meta["pixel_source"]``). Off by default: the field is
  then skipped and counted like any unreadable sample.

`resolve_fields` walks the JSON API (screen -> plates -> ``wellsampleindex/{k}/wells`` -> image
ids) and reads each well's bulk-annotation row (compound, dose, gene, control type, channel
stains), with at most 8 requests in flight. Each field becomes one row with the columns of a
biofm manifest (``id``, ``paths``, ``channels``) plus ``image_id``, ``plate``, ``well``,
``field``, ``zarr`` and the annotation columns. `IDRFieldLoader` reads a row's raw pixels.
"""

from __future__ import annotations

import os
import re
import string
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from biofm.core.errors import BadInputError, BadSampleError, ConfigError
from biofm.core.sample import Sample
from biofm.idr.cache import ChunkCache
from biofm.idr.http import IDR_URL, IDRClient, IDRError, table_rows

PREFIX = "idr:"
ZARR_URL = "https://uk1s3.embassy.ebi.ac.uk/idr/zarr/v0.4"
_INT_KEYS = ("plates", "wells", "fields")
_KEYS = (*_INT_KEYS, "plate", "api", "zarr", "cache", "cache_gb", "render")
_SKIP_COLUMNS = {"Plate", "Well", "Plate Name", "Well Name", "Well Number", "Plate_Well"}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "biofm" / "idr"


@dataclass(frozen=True)
class IDRQuery:
    """A parsed ``idr:`` data source (see the module docstring for the keys)."""

    study: str
    screen: str = ""
    plates: int | None = None
    plate_names: tuple[str, ...] = ()
    wells: int | None = None
    fields: int = 1
    api: str = IDR_URL
    zarr: str = ZARR_URL
    cache: str = field(default_factory=lambda: str(default_cache_dir()))
    cache_gb: float = 20.0
    render: bool = False

    @property
    def text(self) -> str:
        """A canonical query string (the same fields give the same text)."""
        parts = [f"{k}={v}" for k, v in (("plates", self.plates), ("wells", self.wells))
                 if v is not None]  # fmt: skip
        parts += [f"plate={p}" for p in self.plate_names] + [f"fields={self.fields}"]
        where = self.study + (f"/{self.screen}" if self.screen else "")
        return f"{PREFIX}{where}?{'&'.join(parts)}&api={self.api}&zarr={self.zarr}"


def is_idr_source(text: str) -> bool:
    return str(text).startswith(PREFIX)


def parse_query(text: str) -> IDRQuery:
    """``idr:idr0036/screenA?plates=2&fields=2`` -> `IDRQuery` (errors name the bad key)."""
    if not is_idr_source(text):
        raise ConfigError(f"{text!r} is not an IDR source", "write it as idr:STUDY?key=value")
    parts = urlsplit(text[len(PREFIX) :])
    where = parts.path.strip("/")
    m = re.fullmatch(r"(idr\d{4}[\w-]*)(?:/(screen\w+))?", where)
    if m is None:
        raise ConfigError(
            f"IDR source {text!r} names no study",
            "start with a study id, e.g. idr:idr0036 or idr:idr0036/screenA",
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {text!r}", f"use {', '.join(_KEYS)}")
    one = {k: v[-1] for k, v in query.items()}
    ints: dict[str, int] = {}
    for key in _INT_KEYS:
        if key in one:
            try:
                ints[key] = int(one[key])
            except ValueError:
                ints[key] = 0
            if ints[key] < 1:
                raise ConfigError(f"{key}={one[key]!r} in {text!r}", f"give {key} >= 1")
    names = tuple(n for v in query.get("plate", []) for n in v.split(",") if n)
    try:
        cache_gb = float(one.get("cache_gb", 20.0))
    except ValueError:
        raise ConfigError(f"cache_gb={one['cache_gb']!r}", "give a size in GB, e.g. 20") from None
    return IDRQuery(
        study=m.group(1), screen=m.group(2) or "", plates=ints.get("plates"), plate_names=names,
        wells=ints.get("wells"), fields=ints.get("fields", 1),
        api=one.get("api", IDR_URL).rstrip("/"), zarr=one.get("zarr", ZARR_URL).rstrip("/"),
        cache=one.get("cache", str(default_cache_dir())), cache_gb=cache_gb,
        render=one.get("render", "0").lower() in ("1", "true", "yes"),
    )  # fmt: skip


# ---------------------------------------------------------------------------------- resolving
def find_screen(client: IDRClient, study: str, screen: str = "") -> dict[str, Any]:
    """The ``/api/v0/m/screens/`` item whose name starts with ``study`` (and has ``screen``)."""
    names: list[str] = []
    for item in client.paged("/api/v0/m/screens/", limit=1000):
        name = str(item.get("Name", ""))
        names.append(name)
        head, _, tail = name.partition("/")
        if head.startswith(study) and (not screen or tail == screen):
            return item
    near = [n for n in names if n.startswith(study[:7])] or names[:5]
    which = study + (f"/{screen}" if screen else "")
    raise BadInputError(f"no screen of {which} on {client.base_url}",
                        f"pick one of {near} (experiments, i.e. non-screen studies, are not "
                        "supported as training sources yet)")  # fmt: skip


def container_of(screen_name: str) -> str:
    """``idr0036-gustafsdottir-cellpainting/screenA`` -> ``idr0036A`` (EBI's folder name)."""
    study, _, screen = screen_name.partition("/")
    letter = screen.removeprefix("screen")[:1].upper() or "A"
    return study[:7] + letter


def _well_name(well: Mapping[str, Any]) -> str:
    return f"{string.ascii_uppercase[int(well['Row'])]}{int(well['Column']) + 1}"


def _plate_fields(client: IDRClient, q: IDRQuery, plate: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (well, field) of ``plate``, wells capped at ``q.wells`` (in row-major order)."""
    rows: list[dict[str, Any]] = []
    keep: set[int] | None = None
    for k in range(q.fields):
        path = f"/api/v0/m/plates/{int(plate['@id'])}/wellsampleindex/{k}/wells/"
        wells = sorted(client.paged(path, limit=1000), key=lambda w: (w["Row"], w["Column"]))
        if keep is None:
            keep = {int(w["@id"]) for w in wells[: q.wells]}
        for w in wells:
            if int(w["@id"]) not in keep or not w.get("WellSamples"):
                continue
            image = w["WellSamples"][0]["Image"]
            rows.append({"image_id": int(image["@id"]), "image_name": image.get("Name", ""),
                         "plate": str(plate["Name"]), "plate_id": int(plate["@id"]),
                         "well": _well_name(w), "well_id": int(w["@id"]), "field": k})  # fmt: skip
    return rows


def _annotations(client: IDRClient, well_id: int) -> dict[str, Any]:
    """The well's bulk-annotation row (string columns), or {} when it has none."""
    try:
        rows = table_rows(client.bulk_annotations(well_id))
    except IDRError as err:
        if err.status == 404:
            return {}
        raise
    return {k: v for k, v in (rows[0] if rows else {}).items() if k not in _SKIP_COLUMNS}


def resolve_fields(q: IDRQuery, client: IDRClient) -> list[dict[str, Any]]:
    """The fields ``q`` selects, one manifest-like row each (see the module docstring)."""
    screen = find_screen(client, q.study, q.screen)
    plates = list(client.paged(f"/api/v0/m/screens/{int(screen['@id'])}/plates/", limit=1000))
    if q.plate_names:
        missing = sorted(set(q.plate_names) - {str(p["Name"]) for p in plates})
        if missing:
            raise BadInputError(
                f"plates {missing} are not in {screen['Name']}",
                f"use plate names such as {[p['Name'] for p in plates[:5]]}",
            )
        plates = [p for p in plates if str(p["Name"]) in q.plate_names]
    plates = plates[: q.plates]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="biofm-idr") as pool:
        per_plate = list(pool.map(lambda p: _plate_fields(client, q, p), plates))
        rows = [r for group in per_plate for r in group]
        well_ids = sorted({r["well_id"] for r in rows})
        notes = dict(zip(well_ids, pool.map(lambda w: _annotations(client, w), well_ids),
                         strict=True))  # fmt: skip
    container = container_of(str(screen["Name"]))
    out = []
    for r in rows:
        out.append({"id": f"idr-{r['image_id']}", "paths": "", "channels": "",
                    "study": q.study, "screen": str(screen["Name"]), **r,
                    "zarr": f"{q.zarr}/{container}/{r['image_id']}.zarr",
                    **notes.get(r["well_id"], {})})  # fmt: skip
    if not out:
        raise BadInputError(
            f"{q.text} selects no fields", "check the plate names and that the plates have images"
        )
    return out


# ---------------------------------------------------------------------------------- pixels
class IDRFieldLoader:
    """Picklable ``load_fn`` for resolved rows: raw pixels of the field from its OME-Zarr copy
    (only the chunks needed, through the shared on-disk cache), else the 8-bit render when the
    query allows it. Each process opens its own HTTP clients on first use."""

    def __init__(self, q: IDRQuery) -> None:
        self.q = q
        self._clients: dict[str, IDRClient] = {}
        self._cache: ChunkCache | None = None
        self._lock = threading.Lock()  # fetch threads share the clients and the cache

    def __getstate__(self) -> dict[str, Any]:
        return {"q": self.q}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["q"])  # type: ignore[misc]

    def client(self, base: str) -> IDRClient:
        """The process's client for the host of ``base`` (one per host: API vs Zarr)."""
        parts = urlsplit(base)
        host = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if host not in self._clients:
                self._clients[host] = IDRClient(host)
            return self._clients[host]

    def cache(self) -> ChunkCache | None:
        with self._lock:
            if self._cache is None and self.q.cache.lower() != "none":
                self._cache = ChunkCache(self.q.cache, int(self.q.cache_gb * 1e9))
            return self._cache

    def __call__(self, row: Mapping[str, Any]) -> Sample:
        """Raw pixels of ``row``. An image IDR refuses (4xx) is a bad sample, skipped and
        counted; a server that stays down (5xx, 429, no connection) raises `IDRError`."""
        url = str(row["zarr"])
        try:
            return self._read(row, url)
        except IDRError as err:
            if err.status is None or err.status == 429 or err.status >= 500:
                raise  # the server is down or overloaded: stop (the checkpoint is intact)
            raise BadSampleError(f"IDR refused {err.url} (HTTP {err.status})",
                                 "the image may be private or removed: it is skipped",
                                 url) from err  # fmt: skip

    def _read(self, row: Mapping[str, Any], url: str) -> Sample:
        from biofm.idr.pixels import open_remote_image

        client = self.client(url)
        try:
            image = open_remote_image(client, urlsplit(url).path, self.cache())
        except BadSampleError as err:
            if not self.q.render:
                raise BadSampleError(
                    f"no OME-Zarr copy of IDR image {row.get('image_id')} ({err})",
                    "add render=1 to the idr: source to use the 8-bit JPEG render instead, or "
                    "point zarr= at where this study's OME-Zarr copies are",
                    url,
                ) from err
            return self._render(row)
        sample = image.to_sample()
        sample.meta.update({"id": row.get("id"), "pixel_source": "ome-zarr", "bit_depth":
                            int(image.dtype.itemsize * 8)})  # fmt: skip
        return sample

    def _render(self, row: Mapping[str, Any]) -> Sample:
        """The whole field from the webgateway's 8-bit render (labelled as such)."""
        from biofm.idr.render import render_region

        client = self.client(self.q.api)
        size = client.img_data(int(row["image_id"]))["size"]
        sample = render_region(client, int(row["image_id"]), 0, 0, int(size["width"]),
                               int(size["height"]), window="stats")  # fmt: skip
        sample.meta["id"] = row.get("id")
        return sample
