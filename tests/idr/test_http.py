"""IDRClient against the loopback stand-in IDR: retries per fault type, paging, etiquette."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("httpx")

from biofm.core.errors import BiofmError
from biofm.idr.http import IDRClient, IDRError, RetryPolicy, table_rows
from biofm.idr.testing import (
    StandInIDR,
    concurrency,
    delay,
    html,
    reset,
    status,
    truncate,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
RECORDED = SHARED / "idr" / "recorded"
IMG = "/webgateway/imgData/122770/"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=5.0)


@pytest.fixture
def recorded() -> Path:
    if not RECORDED.is_dir():
        pytest.skip(f"recorded IDR responses {RECORDED} are absent (shared folder not here)")
    return RECORDED


@pytest.fixture
def idr() -> Iterator[StandInIDR]:
    with StandInIDR(recorded_dir=RECORDED if RECORDED.is_dir() else None) as server:
        yield server


def make_client(url: str, policy: RetryPolicy = FAST, **kw: int) -> tuple[IDRClient, list[float]]:
    """A client whose sleep records the delays instead of sleeping."""
    client = IDRClient(url, policy=policy, **kw)  # type: ignore[arg-type]
    delays: list[float] = []
    client.sleep = delays.append
    return client, delays


@pytest.mark.parametrize(
    "fault",
    [status(500), status(503), html(), concurrency(), reset()],
    ids=["http500", "http503", "html_maintenance", "concurrency_exception", "connection_reset"],
)
def test_json_fault_is_retried_then_succeeds(idr: StandInIDR, fault: object) -> None:
    idr.faults.add("/webgateway/imgData/", fault, fault)  # type: ignore[arg-type]
    client, delays = make_client(idr.url)
    with client:
        data = client.img_data(122770)
    assert data["id"] == 122770
    assert idr.hits[IMG] == 3 and len(delays) == 2 and len(idr.faults) == 0


def test_429_retry_after_is_honoured_and_capped(idr: StandInIDR) -> None:
    idr.faults.add(IMG, status(429, retry_after=3), status(429, retry_after=999))
    policy = RetryPolicy(max_attempts=3, max_delay_s=10.0, timeout_s=5.0)
    client, delays = make_client(idr.url, policy)
    with client:
        assert client.get_json(IMG)["id"] == 122770
    assert delays == [3.0, 10.0]


def test_concurrency_backoff_hint_is_used(idr: StandInIDR) -> None:
    idr.faults.add(IMG, concurrency(back_off_ms=40))
    client, delays = make_client(idr.url)
    with client:
        client.img_data(122770)
    assert delays == [pytest.approx(0.04)]


def test_truncated_bytes_are_retried() -> None:
    blob = bytes(range(256)) * 64
    with StandInIDR(blobs={"/zarr/img.zarr/0/0/0/0": blob}) as idr:
        idr.faults.add("/zarr/", truncate(), truncate())
        client, delays = make_client(idr.url)
        with client:
            assert client.get_bytes("/zarr/img.zarr/0/0/0/0") == blob
        assert idr.hits["/zarr/img.zarr/0/0/0/0"] == 3 and len(delays) == 2


def test_slow_response_beyond_timeout_is_retried(idr: StandInIDR) -> None:
    idr.faults.add(IMG, delay(0.6))
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01, timeout_s=0.2)
    client, delays = make_client(idr.url, policy)
    with client:
        assert client.img_data(122770)["id"] == 122770
    assert len(delays) == 1 and idr.hits[IMG] == 2


def test_budget_spent_raises_clear_error(idr: StandInIDR) -> None:
    idr.faults.add(IMG, *[status(502)] * 4)
    client, delays = make_client(idr.url)
    with client, pytest.raises(IDRError) as info:
        client.img_data(122770)
    message = str(info.value)
    assert IMG in message and "4 attempts" in message and "HTTP 502" in message
    assert "Fix:" in message and isinstance(info.value, BiofmError)
    assert idr.hits[IMG] == 4 and len(delays) == 3


def test_404_is_not_retried(idr: StandInIDR) -> None:
    client, delays = make_client(idr.url)
    with client, pytest.raises(IDRError) as info:
        client.img_data(999)
    assert info.value.status == 404 and "/webgateway/imgData/999/" in str(info.value)
    assert idr.hits["/webgateway/imgData/999/"] == 1 and delays == []


def test_paging_walks_total_count_with_limit_capped() -> None:
    names = [f"idr{i:04d}-screenA" for i in range(2345)]
    with StandInIDR(screens=names) as idr:
        client, _ = make_client(idr.url)
        with client:
            screens = list(client.paged("/api/v0/m/screens/", limit=5000))
            small = list(client.paged("/api/v0/m/screens/", {"childCount": "true"}, limit=700))
        assert [s["Name"] for s in screens] == names == [s["Name"] for s in small]
        assert idr.hits["/api/v0/m/screens/"] == 3 + 4
        sent = [path for path, _ in idr.requests]
        assert sum("limit=1000" in p for p in sent) == 3
        assert all("childCount=true" in p for p in sent[3:])


def test_screens_and_webclient_plates(idr: StandInIDR) -> None:
    client, _ = make_client(idr.url)
    with client:
        screens = list(client.screens())
        plates = client.plates_of_screen(102)
    assert {"@id", "@type", "Name", "url:plates"} <= set(screens[0])
    assert len(plates) == 12 and {"id", "name", "childCount"} <= set(plates[0])


def test_recorded_img_data_parses(recorded: Path, idr: StandInIDR) -> None:
    client, _ = make_client(idr.url)
    with client:
        data = client.img_data(122770)
    labels = [c["label"] for c in data["channels"]]
    assert labels == ["DAPI", "FITC-FilterWheel", "TRITC-FilterWheel"]
    assert data["size"] == {"width": 696, "height": 520, "z": 1, "t": 1, "c": 3}
    assert data["meta"]["pixelsType"] == "uint16" and data["meta"]["wellId"] == 45217


def test_recorded_bulk_annotation_rows(recorded: Path, idr: StandInIDR) -> None:
    client, _ = make_client(idr.url)
    with client:
        table = client.bulk_annotations(45217)
    (row,) = table_rows(table)
    assert row["Well"] == 45217 and row["Gene Symbol"] == "ECT2"
    assert row["Channels"].startswith("DAPI:DNA")
    assert "query=Well-45217" in idr.requests[-1][0]


def test_builtin_examples_without_recordings() -> None:
    with StandInIDR() as idr:
        client, _ = make_client(idr.url)
        with client:
            assert client.img_data(122770)["size"]["c"] == 3
            assert table_rows(client.bulk_annotations(45217))[0]["Gene Symbol"] == "ECT2"
            assert len(client.plates_of_screen(102)) == 12


def test_concurrency_is_limited_across_threads() -> None:
    with StandInIDR(latency_s=0.05) as idr:
        client, _ = make_client(idr.url, max_in_flight=8)

        def work() -> None:
            for _ in range(3):
                client.img_data(122770)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        assert idr.hits[IMG] == 48
        assert 1 < idr.max_in_flight <= 8


def test_user_agent_cookies_and_no_cache_busting(idr: StandInIDR) -> None:
    client, _ = make_client(idr.url)
    with client:
        client.start_session()
        client.img_data(122770)
        client.get_json(IMG)
    (first_path, first), *rest = idr.requests
    assert first_path == "/webclient/?experimenter=-1"
    assert all(h["User-Agent"].startswith("biofm/") for _, h in idr.requests)
    assert "Cookie" not in first
    assert all("sessionid_idr=standin-session" in h["Cookie"] for _, h in rest)
    assert [p for p, _ in rest] == [IMG, IMG]


def test_backoff_grows_and_stays_under_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=20.0, jitter=False)
    rng = random.Random(0)
    caps = [policy.backoff(k, rng) for k in range(10)]
    assert caps[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] and caps[6:] == [20.0] * 4
    jittered = RetryPolicy(base_delay_s=0.5, max_delay_s=20.0)
    for k in range(10):
        draws = [jittered.backoff(k, rng) for _ in range(200)]
        assert all(0.0 <= d <= caps[k] for d in draws)
        assert max(draws) > 0.5 * caps[k]


def test_client_retry_delays_grow(idr: StandInIDR) -> None:
    idr.faults.add(IMG, *[status(500)] * 4)
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=3.0, jitter=False)
    client, delays = make_client(idr.url, policy)
    with client:
        client.img_data(122770)
    assert delays == [0.5, 1.0, 2.0, 3.0]
