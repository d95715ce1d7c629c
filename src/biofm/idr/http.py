"""A robust JSON/bytes client for the Image Data Resource (IDR, https://idr.openmicroscopy.org).

One `httpx.Client` per `IDRClient` (session cookies kept across requests), a descriptive
User-Agent, at most ``max_in_flight`` requests at once across threads (IDR etiquette: <= 8),
and bounded retries with full-jitter exponential backoff on everything IDR does when busy:
connection resets, timeouts, HTTP 5xx, 429 (``Retry-After`` honoured), the HTML maintenance
page served where JSON was expected, OMERO's ``{"ConcurrencyException": {"backOff": ms}}`` and
truncated bodies. A 4xx other than 429 is raised at once. When the budget is spent an `IDRError`
names the URL, the attempts and the last failure.

No cache-busting query parameters are ever added: IDR's nginx caches API URLs for a day, so
identical URLs are cheap. Needs the optional extra: ``pip install 'biofm[idr]'``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from biofm.core.errors import BadInputError, BiofmError, MissingExtraError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
T = TypeVar("T")

IDR_URL = "https://idr.openmicroscopy.org"
MAX_LIMIT = 1000  # omero.web.api.max_limit on IDR
WEBCLIENT_PAGE = 500  # omero.web.page_size on IDR
class IDRError(BiofmError):
    """A request to IDR failed for good. ``status`` is the last HTTP status (None: no response)."""

    def __init__(self, message: str, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class _Retryable(Exception):
    """One failed attempt worth retrying; ``retry_after`` (s) is the server's hint, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Delay before retry k (0-based): uniform(0, min(max, base * 2**k))."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    jitter: bool = True
    timeout_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay (s) after failed attempt ``attempt``: full jitter, capped at ``max_delay_s``."""
        cap = min(self.max_delay_s, self.base_delay_s * 2.0**attempt)
        return rng.uniform(0.0, cap) if self.jitter else cap

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """The server's ``retry_after`` hint (capped) when given, else `backoff`."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        return self.backoff(attempt, rng)


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("httpx", "idr") from exc
    return httpx


def default_user_agent() -> str:
    """``biofm/<version> (...)``: tells IDR's operators which tool is calling and why. Set
    ``BIOFM_USER_AGENT_CONTACT`` (an e-mail or URL) to add how to reach you."""
    import os

    from biofm._version import __version__

    contact = os.environ.get("BIOFM_USER_AGENT_CONTACT", "").strip()
    extra = f"; contact {contact}" if contact else ""
    return f"biofm/{__version__} (bioimage foundation-model training data loader{extra})"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def _check_status(resp: httpx.Response) -> None:
    """Raise `_Retryable` for 5xx/429, `IDRError` at once for any other 4xx."""
    code = resp.status_code
    if code == 429 or code >= 500:
        raise _Retryable(f"HTTP {code}", _retry_after(resp))
    if code >= 400:
        raise IDRError(
            f"IDR answered HTTP {code} for {resp.request.url} (not retried): {resp.text[:200]!r}. "
            "Fix: check the id/path exists on IDR and is public",
            url=str(resp.request.url),
            status=code,
        )


def _is_html(resp: httpx.Response) -> bool:
    ctype = resp.headers.get("Content-Type", "")
    return "html" in ctype or resp.content.lstrip()[:1] == b"<"


def _parse_json(resp: httpx.Response) -> Any:
    """Response -> JSON value, or `_Retryable` for the maintenance page / OMERO busy answers."""
    _check_status(resp)
    if _is_html(resp):
        raise _Retryable("HTML page instead of JSON (IDR maintenance page?)")
    try:
        data = json.loads(resp.content)
    except ValueError as exc:
        raise _Retryable(f"invalid JSON ({exc})") from exc
    if "ConcurrencyException" in resp.text:
        hint = data.get("ConcurrencyException") if isinstance(data, dict) else None
        back_off = hint.get("backOff") if isinstance(hint, dict) else None
        wait = float(back_off) / 1000.0 if isinstance(back_off, (int, float)) else None
        raise _Retryable("OMERO ConcurrencyException (server busy)", wait)
    return data


def _parse_bytes(resp: httpx.Response) -> bytes:
    """Response -> body bytes, or `_Retryable` for a truncated body or an HTML page."""
    _check_status(resp)
    if "html" in resp.headers.get("Content-Type", ""):
        raise _Retryable("HTML page instead of bytes (IDR maintenance page?)")
    expected = resp.headers.get("Content-Length")
    unencoded = "Content-Encoding" not in resp.headers
    if expected is not None and unencoded and len(resp.content) < int(expected):
        raise _Retryable(f"truncated body ({len(resp.content)} of {expected} bytes)")
    return resp.content


def table_rows(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Bulk-annotation table JSON -> one ``{column: value}`` dict per row."""
    columns = table["data"]["columns"]
    return [dict(zip(columns, row, strict=True)) for row in table["data"]["rows"]]


class IDRClient:
    """Thread-safe IDR client. ``sleep`` is an attribute so tests can record delays."""

    def __init__(
        self,
        base_url: str = IDR_URL,
        policy: RetryPolicy | None = None,
        max_in_flight: int = 8,
        user_agent: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise BadInputError(f"max_in_flight={max_in_flight} is < 1", "pass 1..8")
        httpx = _import_httpx()
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.sleep: Callable[[float], None] = time.sleep
        self._rng = random.Random()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.missing: set[str] = set()  # URLs answered 404 (read-only stores: they stay so)
        self.hints: dict[str, Any] = {}  # e.g. the Zarr format of the images opened so far
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=self.policy.timeout_s,
            headers={"User-Agent": user_agent or default_user_agent()},
            transport=transport,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=max_in_flight),
        )

    def _fetch(self, path: str, params: Mapping[str, Any] | None, parse: Callable[[Any], T]) -> T:
        httpx = _import_httpx()
        url = self.base_url + path
        last, status = "no attempt made", None
        for attempt in range(self.policy.max_attempts):
            hint = None
            try:
                with self._slots:
                    resp = self._client.get(path, params=params)
                    status = resp.status_code
                    return parse(resp)
            except _Retryable as exc:
                last, hint = exc.reason, exc.retry_after
            except httpx.TransportError as exc:
                last, status = f"{type(exc).__name__}: {exc}", None
            if attempt + 1 < self.policy.max_attempts:
                delay = self.policy.delay(attempt, hint, self._rng)
                log.warning("IDR %s failed (%s); retry %d in %.2f s", url, last, attempt + 1, delay)
                self.sleep(delay)
        raise IDRError(
            f"IDR request {url} failed after {self.policy.max_attempts} attempts; last failure: "
            f"{last}. Fix: check connectivity and https://idr.openmicroscopy.org status "
            "(maintenance?), or raise RetryPolicy.max_attempts / timeout_s",
            url=url,
            status=status,
        )

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` (relative to ``base_url``) and decode JSON, with retries."""
        return self._fetch(path, params, _parse_json)

    def get_bytes(self, path: str) -> bytes:
        """GET raw bytes (e.g. an OME-Zarr chunk), with retries; short bodies are retried."""
        return self._fetch(path, None, _parse_bytes)

    def paged(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Items of an ``/api/v0/m/...`` list: ``{"data": [...], "meta": {"totalCount": n}}``.

        Walks ``offset`` in steps of ``limit`` (capped at 1000, IDR's max) until totalCount.
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        offset = 0
        while True:
            page = self.get_json(path, {**(params or {}), "offset": offset, "limit": limit})
            if not isinstance(page, dict) or "data" not in page or "meta" not in page:
                raise IDRError(
                    f"{self.base_url}{path} did not return a paged list ({{'data', 'meta'}}). "
                    "Fix: use get_json for single objects",
                    url=self.base_url + path,
                )
            yield from page["data"]
            offset += len(page["data"])
            if not page["data"] or offset >= int(page["meta"]["totalCount"]):
                return

    def img_data(self, image_id: int) -> dict[str, Any]:
        """``/webgateway/imgData/{id}/``: ``{"id", "meta": {imageName, wellId, pixelsType, ...},
        "size": {width, height, z, t, c}, "pixel_size": {x, y, z}, "channels": [{label, color,
        window: {min, max, start, end}, active, ...}], "rdefs", ...}``."""
        return dict(self.get_json(f"/webgateway/imgData/{int(image_id)}/"))

    def plate_grid(self, plate_id: int, field: int = 0) -> dict[str, Any]:
        """``/webgateway/plate/{id}/{field}/``: ``{"grid": [[{"id", "name", "wellId", "field",
        "thumb_url", ...} | None per column] per row], "collabels", "rowlabels",
        "image_sizes": [{"x", "y", "image_id"}]}`` (None: an empty well)."""
        return dict(self.get_json(f"/webgateway/plate/{int(plate_id)}/{int(field)}/"))

    def plates_of_screen(self, screen_id: int) -> list[dict[str, Any]]:
        """``/webclient/api/plates/?id={screen}&page=N``: every ``{"id", "name", "ownerId",
        "childCount", "permsCss"}`` over all pages (500 per page, no meta: stop on a short page)."""
        plates: list[dict[str, Any]] = []
        for page in range(1, 1_000_000):
            params = {"id": int(screen_id), "page": page, "limit": WEBCLIENT_PAGE}
            batch = self.get_json("/webclient/api/plates/", params)["plates"]
            plates.extend(batch)
            if len(batch) < WEBCLIENT_PAGE:
                break
        return plates

    def bulk_annotations(self, well_id: int) -> dict[str, Any]:
        """Bulk-annotation table row of a well: ``{"data": {"column_types", "columns", "rows"},
        "meta": {"rowCount", "totalCount", "limit", "offset"}, "id", "annId", "parentType",
        "parentId", ...}``. `table_rows` turns it into ``{column: value}`` dicts."""
        wid = int(well_id)
        path = f"/webgateway/table/Screen.plateLinks.child.wells/{wid}/query/"
        return dict(self.get_json(path, {"query": f"Well-{wid}"}))

    def screens(self) -> Iterator[dict[str, Any]]:
        """All screens: ``{"@id", "@type", "Name", "Description", "url:screen", "url:plates"}``."""
        return self.paged("/api/v0/m/screens/")

    def start_session(self) -> None:
        """``GET /webclient/?experimenter=-1`` once to obtain IDR's public session cookie."""
        self._fetch("/webclient/", {"experimenter": -1}, _check_status)

    @property
    def pool(self) -> ThreadPoolExecutor:
        """``max_in_flight`` threads for blocking fetches issued from async code (zarr)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_in_flight,
                                                thread_name_prefix="biofm-idr-io")
            return self._pool

    def close(self) -> None:
        """Close the pooled connections and fetch threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._client.close()

    def __enter__(self) -> IDRClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
