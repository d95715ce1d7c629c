"""A stand-in IDR server on loopback, for testing pipelines offline over real HTTP.

It serves the URL patterns and JSON shapes of the real IDR (from recorded responses when a
folder of ``*.json`` recordings is given, else from small built-in examples of the same shape):

- ``/api/v0/m/screens/?offset&limit``: ``{"data": [Screen...], "meta": {"offset", "limit",
  "maxLimit", "totalCount"}}`` (limit clamped to 1000, ``limit=0`` counts only)
- ``/webgateway/imgData/{id}/`` (and ``/webclient/imgData/{id}/``): image metadata
- ``/webclient/api/plates/?id={screen}&page&limit``: ``{"plates": [{"id", "name", ...}]}``
- ``/webgateway/table/Screen.plateLinks.child.wells/{well}/query/?query=Well-{well}``
- ``/webclient/`` (sets cookie ``sessionid_idr``), paths in ``blobs`` (raw bytes); else 404
- ``/zarr/<relative path>``: the bytes of that file under ``files_root`` when given (static
  files, e.g. an OME-Zarr store written by ``biofm.idr._standin_data``), else 404
- for studies added with ``add_study`` (see `biofm.idr._standin_extra`):
  ``/webclient/api/annotations/?type=map&screen|plate|well|image=ID`` (map annotations),
  ``/mapr/api/{menu}/[plates/|images/]?value=V`` (mapr look-ups) and
  ``/webgateway/render_image_region/{iid}/{z}/{t}/?region=x,y,w,h&c&m&q`` (JPEG, image/jpeg)

Faults are scripted per path prefix and consumed in order; ``latency_s`` delays every request.
``hits``, ``max_in_flight`` and ``requests`` (path + headers) let tests check client behaviour::

    from biofm.idr.http import IDRClient
    from biofm.idr.testing import StandInIDR, html, status

    with StandInIDR() as idr:
        idr.faults.add("/webgateway/imgData/", status(503), html())
        with IDRClient(idr.url) as client:
            meta = client.img_data(122770)  # two retries, then the image metadata
        assert idr.hits["/webgateway/imgData/122770/"] == 3
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from biofm.idr._standin_data import builtin_img_data, builtin_table, page_of, screen_item
from biofm.idr._standin_extra import route_extra
from biofm.idr._standin_study import StandInStudy, build_study

_MAINTENANCE = b"<!DOCTYPE html><html><head><title>IDR maintenance</title></head><body><h1>The IDR is undergoing maintenance</h1></body></html>"  # noqa: E501
_TABLE = "/webgateway/table/Screen.plateLinks.child.wells/"
FILES_PREFIX = "/zarr/"
Route = Callable[["StandInIDR", str, dict[str, str]], "tuple[int, Any] | None"]
"""An extra answer: (stand-in, path, one value per query key) -> (status, body) or None."""


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour: kind in {status, html, concurrency, reset, truncate, delay}."""

    kind: str
    code: int = 500
    retry_after: float | None = None
    seconds: float = 0.0


def status(code: int, retry_after: float | None = None) -> Fault:
    """Answer HTTP ``code`` (with ``Retry-After: retry_after`` when given)."""
    return Fault("status", code=code, retry_after=retry_after)


def html() -> Fault:
    """HTTP 200 with IDR's HTML maintenance page (``text/html``) where JSON was expected."""
    return Fault("html")


def concurrency(back_off_ms: int = 100) -> Fault:
    """HTTP 200 with OMERO's ``{"ConcurrencyException": {"backOff": ms}}`` (pyramid building)."""
    return Fault("concurrency", seconds=back_off_ms / 1000.0)


def reset() -> Fault:
    """Close the connection without sending a response."""
    return Fault("reset")


def truncate() -> Fault:
    """Announce a Content-Length larger than the body, send part of it, close."""
    return Fault("truncate")


def delay(seconds: float) -> Fault:
    """Wait ``seconds`` before answering normally (exceeds a short client timeout)."""
    return Fault("delay", seconds=seconds)


class FaultScript:
    """Thread-safe scripted faults: ``add(prefix, *faults)``; each request takes the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[str, Fault]] = []

    def add(self, prefix: str, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend((prefix, f) for f in faults)

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for i, (prefix, fault) in enumerate(self._queue):
                if path.startswith(prefix):
                    del self._queue[i]
                    return fault
        return None

    def clear(self) -> None:
        """Drop the faults not yet used."""
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class StandInIDR:
    """Loopback IDR: ``start()``/``stop()`` or ``with``; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(
        self,
        recorded_dir: Path | None = None,
        screens: Sequence[str] = ("idr0001-screenA", "idr0002-screenA", "idr0008-screenA"),
        blobs: Mapping[str, bytes] | None = None,
        latency_s: float = 0.0,
        files_root: Path | None = None,
    ) -> None:
        self.images: dict[int, dict[str, Any]] = {122770: builtin_img_data(122770)}
        self.plates: dict[int, list[dict[str, Any]]] = {102: [
            {"id": 422 + i, "name": f"plate1_{i}", "ownerId": 2, "childCount": 1, "permsCss": ""}
            for i in range(12)]}  # fmt: skip
        self.tables: dict[int, dict[str, Any]] = {45217: builtin_table(45217)}
        if recorded_dir is not None:
            self._load(Path(recorded_dir))
        self.screen_names = list(screens)
        self.blobs = dict(blobs or {})
        self.latency_s = latency_s
        self.files_root = Path(files_root).resolve() if files_root is not None else None
        self.faults = FaultScript()
        self.studies: list[StandInStudy] = []
        self.routes: list[Route] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _load(self, folder: Path) -> None:
        """Recorded responses, keyed by the id in their file name."""
        for file in sorted(folder.glob("*.json")):
            if m := re.search(r"imgData_(\d+)", file.name):
                self.images[int(m.group(1))] = json.loads(file.read_text())
            elif m := re.search(r"platesscreen_item(\d+)", file.name):
                self.plates[int(m.group(1))] = json.loads(file.read_text())["plates"]
            elif m := re.search(r"table_well(\d+)", file.name):
                self.tables[int(m.group(1))] = json.loads(file.read_text())

    def _file(self, rel: str) -> tuple[int, Any]:
        """(200, bytes) of ``files_root/rel``; 404 outside the folder or when absent."""
        if self.files_root is not None:
            file = (self.files_root / rel).resolve()
            if file.is_relative_to(self.files_root) and file.is_file():
                return 200, file.read_bytes()
        return 404, {"message": f"404 Not Found: {FILES_PREFIX}{rel}"}

    def add_study(self, study: str = "idr0036", **kw: Any) -> StandInStudy:
        """Serve ``plates`` x ``wells`` x ``fields`` fields of a catalogue study (see
        `biofm.idr._standin_study.build_study` for the keywords): its screen, plates, wells,
        images, annotations, and OME-Zarr pixels under ``/zarr/v0.4/<container>/<id>.zarr``
        (written into ``files_root``, a temporary folder when none was given)."""
        if self.files_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="biofm-standin-")
            self.files_root = Path(self._tmp.name).resolve()
        built = build_study(study, self.files_root, **kw)
        self.studies.append(built)
        return built

    @property
    def zarr_base(self) -> str:
        """Base URL of the served OME-Zarr images (IDR's is
        ``https://uk1s3.embassy.ebi.ac.uk/idr/zarr/v0.4``)."""
        return f"{self.url}{FILES_PREFIX}v0.4"

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("StandInIDR is not started: call start() or use 'with'")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StandInIDR:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda *a: None  # type: ignore[method-assign]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> StandInIDR:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        """(status, JSON value or bytes) for a normal answer."""
        one = {k: v[0] for k, v in query.items()}
        if path in self.blobs:
            return 200, self.blobs[path]
        if path.startswith(FILES_PREFIX):
            return self._file(path[len(FILES_PREFIX) :])
        if path == "/webclient/":
            return 200, b"<!DOCTYPE html><html><body>IDR webclient</body></html>"
        if path == "/api/v0/m/screens/":
            items = [screen_item(i + 1, n, self.url) for i, n in enumerate(self.screen_names)]
            items += [s.screen_json(self.url) for s in self.studies]
            return 200, page_of(items, one)
        for extra in [route_study, route_extra, *self.routes]:
            answer = extra(self, path, one)
            if answer is not None:
                return answer
        if m := re.fullmatch(r"/(?:webgateway|webclient)/imgData/(\d+)/", path):
            found = self.images.get(int(m.group(1)))
            return (200, found) if found else (404, {"message": f"Image {m.group(1)} not found"})
        if path == "/webclient/api/plates/" and int(one.get("id", -1)) in self.plates:
            page, size = int(one.get("page", 1)), int(one.get("limit", 500))
            plates = self.plates[int(one["id"])][(page - 1) * size : page * size]
            return 200, {"plates": plates}
        if (m := re.fullmatch(re.escape(_TABLE) + r"(\d+)/query/", path)) and int(
            m.group(1)
        ) in self.tables:
            return 200, self.tables[int(m.group(1))]
        return 404, {"message": f"404 Not Found: {path}"}


def _find(idr: StandInIDR, kind: str, oid: int) -> tuple[StandInStudy, Any] | None:
    """(study, object) of ``kind`` in {screen, plate, well, image} with id ``oid``."""
    for s in idr.studies:
        found: Any = {"screen": s if s.screen_id == oid else None,
                      "plate": next((p for p in s.plates if p.id == oid), None),
                      "well": s.wells.get(oid), "image": s.images.get(oid)}[kind]
        if found is not None:
            return s, found
    return None


def _not_found(kind: str, oid: str) -> tuple[int, Any]:
    return 404, {"message": f"{kind} {oid} not found"}


def route_study(idr: StandInIDR, path: str, one: dict[str, str]) -> tuple[int, Any] | None:
    """Answers for the objects of added studies; None when ``path`` is not one of theirs."""
    base = idr.url
    api = re.fullmatch(r"/api/v0/m/(screens|plates|wells|images)/(\d+)/(.*)", path)
    if api is not None:
        kind, oid, rest = api.group(1)[:-1], int(api.group(2)), api.group(3)
        hit = _find(idr, kind, oid)
        if hit is None:
            return None if kind == "screen" and not rest else _not_found(kind, str(oid))
        s, obj = hit
        if kind == "screen" and rest == "":
            return 200, {"data": s.screen_json(base)}
        if kind == "screen" and rest == "plates/":
            return 200, page_of([s.plate_json(p, base) for p in s.plates], one)
        if kind == "plate" and rest == "":
            n = max((len(w.images) for w in obj.wells), default=1)
            urls = [f"{base}/api/v0/m/plates/{oid}/wellsampleindex/{k}/wells/" for k in range(n)]
            data = {**s.plate_json(obj, base), "omero:wellsampleIndex": [0, n - 1],
                    "url:wellsampleindex_wells": urls}
            return 200, {"data": data}
        if kind == "plate" and (m := re.fullmatch(r"wellsampleindex/(\d+)/wells/", rest)):
            k = int(m.group(1))
            wells = [s.well_json(w, base, [k]) for w in obj.wells if len(w.images) > k]
            return 200, page_of(wells, one)
        if kind == "plate" and rest == "wells/":
            return 200, page_of([s.well_json(w, base, None) for w in obj.wells], one)
        if kind == "well" and rest == "":
            return 200, {"data": s.well_json(obj, base, None)}
        if kind == "image" and rest == "":
            return 200, {"data": s.image_json(obj, base, channels=True)}
        return _not_found("path", path)
    if m := re.fullmatch(r"/(?:webgateway|webclient)/imgData/(\d+)/", path):
        hit = _find(idr, "image", int(m.group(1)))
        return (200, hit[0].img_data(hit[1])) if hit is not None else None
    if m := re.fullmatch(re.escape(_TABLE) + r"(\d+)/query/", path):
        hit = _find(idr, "well", int(m.group(1)))
        return (200, hit[0].table(hit[1])) if hit is not None else None
    if m := re.fullmatch(r"/webgateway/plate/(\d+)/(?:(\d+)/)?", path):
        hit = _find(idr, "plate", int(m.group(1)))
        return (200, hit[0].plate_grid(hit[1], int(m.group(2) or 0))) if hit else None
    if path == "/webclient/api/plates/" and (hit := _find(idr, "screen", int(one.get("id", -1)))):
        page, size = int(one.get("page", 1)), int(one.get("limit", 500))
        plates = [{"id": p.id, "name": p.name, "ownerId": 2, "childCount": 1, "permsCss": ""}
                  for p in hit[0].plates][(page - 1) * size : page * size]
        return 200, {"plates": plates}
    return None


def _make_handler(idr: StandInIDR) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each answer waits for the client's delayed ACK

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            with idr._lock:
                idr.hits[parts.path] += 1
                idr.requests.append((self.path, dict(self.headers.items())))
                idr._in_flight += 1
                idr.max_in_flight = max(idr.max_in_flight, idr._in_flight)
            try:
                time.sleep(idr.latency_s)
                self._answer(parts.path, parse_qs(parts.query), idr.faults.take(parts.path))
            finally:
                with idr._lock:
                    idr._in_flight -= 1

        def _answer(self, path: str, query: dict[str, list[str]], fault: Fault | None) -> None:
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "reset":
                self.close_connection = True
                return
            code, body = idr.route(path, query)
            ctype, headers = "application/json", {}
            if fault is not None and fault.kind == "status":
                code, body = fault.code, {"message": f"injected HTTP {fault.code}"}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
            elif fault is not None and fault.kind == "html":
                code, body, ctype = 200, _MAINTENANCE, "text/html; charset=utf-8"
            elif fault is not None and fault.kind == "concurrency":
                code, body = 200, {"ConcurrencyException": {"backOff": int(fault.seconds * 1000)}}
            if isinstance(body, bytes) and ctype == "application/json":
                raw = path.startswith(FILES_PREFIX) or not body.startswith(b"<")
                ctype = "application/octet-stream" if raw else "text/html"
                if not path.startswith(FILES_PREFIX) and body.startswith(b"\xff\xd8\xff"):
                    ctype = "image/jpeg"
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            cut = fault is not None and fault.kind == "truncate"
            self._send(code, data, ctype, headers, cut)

        def _send(
            self, code: int, data: bytes, ctype: str, hdrs: dict[str, str], cut: bool
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) + (100 if cut else 0)))
            if "sessionid_idr" not in self.headers.get("Cookie", ""):
                self.send_header("Set-Cookie", "sessionid_idr=standin-session; Path=/")
            for key, value in hdrs.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if cut else data)
            self.close_connection = cut

    return Handler
