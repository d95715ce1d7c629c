"""StreamingFieldDataset: order, sharding, resume (also after SIGKILL), bad fields, prefetch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from biofm.core.errors import ConfigError
from biofm.core.sample import Sample
from biofm.data.collate import Skipped, ViewBatch, collate_views
from biofm.data.streaming import StreamingFieldDataset, StreamPosition

REPO = Path(__file__).resolve().parents[2]
CROPS = 2


class FieldLoader:
    """Picklable local load_fn: field ``i`` is seeded noise with ``i`` in pixel (0, 0).

    Ids in ``bad`` fail: "missing*" raise OSError, others load a blank (constant) image."""

    def __init__(self, sleep: float = 0.0, bad: tuple[str, ...] = ()) -> None:
        self.sleep = sleep
        self.bad = bad

    def __call__(self, ref: Mapping[str, Any]) -> Sample:
        if self.sleep:
            time.sleep(self.sleep)
        i = int(ref["i"])
        if ref["id"] in self.bad:
            if str(ref["id"]).startswith("missing"):
                raise OSError(f"no such object: {ref['id']}")
            return Sample(np.zeros((2, 24, 24), np.uint16), ["ER", "Mito"])
        px = np.random.default_rng(i).integers(0, 4000, (2, 24, 24)).astype(np.uint16)
        px[:, 0, 0] = i
        return Sample(px, ["ER", "Mito"])


class CountingLoader(FieldLoader):
    """FieldLoader that records the most loads in flight at once (threads of one process)."""

    def __init__(self, sleep: float) -> None:
        super().__init__(sleep)
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, ref: Mapping[str, Any]) -> Sample:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().__call__(ref)
        finally:
            with self.lock:
                self.now -= 1


def refs(n: int, bad: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    ids = [f"f{i:03d}" for i in range(n)]
    for k, b in enumerate(bad):
        ids[3 * k + 1] = b
    return [{"id": s, "i": i, "plate": "P1", "well": f"A{i:02d}", "channels": ["ER", "Mito"]}
            for i, s in enumerate(ids)]


def make(n: int = 24, bad: tuple[str, ...] = (), sleep: float = 0.0,
         **kw: Any) -> StreamingFieldDataset:
    args: dict[str, Any] = dict(crop_size=16, crops_per_field=CROPS, seed=3, prefetch=4,
                                rank=0, world_size=1)
    args.update(kw)
    return StreamingFieldDataset(refs(n, bad), FieldLoader(sleep, bad), **args)


def loader(ds: StreamingFieldDataset, workers: int, batch: int = 3) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_views)


def keys(batches: Any) -> list[tuple[int, int]]:
    return [(m["field_index"], m["crop_index"]) for b in batches for m in b.meta]


def items(ds: StreamingFieldDataset) -> list[dict[str, Any]]:
    """Iterate in this process (no workers); every item must be usable."""
    out = list(ds)
    assert all(isinstance(it, dict) for it in out)
    return [it for it in out if isinstance(it, dict)]


def everything(n: int, fields: Any = None) -> list[tuple[int, int]]:
    return sorted((f, k) for f in (range(n) if fields is None else fields) for k in range(CROPS))


# ---------------------------------------------------------------- (a) determinism
def test_order_fixed_by_seed_and_epoch_and_differs_across_epochs() -> None:
    a, b = items(make()), items(make())
    assert [it["meta"]["index"] for it in a] == [it["meta"]["index"] for it in b]
    assert all(torch.equal(x["views"][0][0], y["views"][0][0]) for x, y in zip(a, b, strict=True))
    assert a[0]["meta"]["plate"] == "P1" and "channels" not in a[0]["meta"]
    assert len(a) == 24 * CROPS and a[0]["views"][0][0].shape == (2, 16, 16)
    ds = make()
    ds.set_epoch(1)
    c = items(ds)
    fields = [it["meta"]["field_index"] for it in a]
    assert [it["meta"]["field_index"] for it in c] != fields
    assert sorted((it["meta"]["field_index"], it["meta"]["crop_index"]) for it in c) == \
        everything(24)
    assert {it["meta"]["index"] for it in a} == set(range(24 * CROPS))


def test_crops_do_not_depend_on_worker_count() -> None:
    ds = make(12)
    alone = {(it["meta"]["field_index"], it["meta"]["crop_index"]): it["views"][0][0]
             for it in items(ds)}
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda x: x))
    got = [it for b in batches for it in b]
    assert len(got) == len(alone)
    for it in got:
        assert torch.equal(alone[(it["meta"]["field_index"], it["meta"]["crop_index"])],
                           it["views"][0][0])


# ---------------------------------------------------------------- (b, c) sharding
def test_ranks_cover_each_field_once() -> None:
    seen = [keys(loader(make(25, rank=r, world_size=2), 0)) for r in range(2)]
    assert not {f for f, _ in seen[0]} & {f for f, _ in seen[1]}
    assert sorted(seen[0] + seen[1]) == everything(25)


def test_workers_split_a_rank_share_without_overlap() -> None:
    ds = make(25, rank=1, world_size=2)
    share = ds.fields_for(0, 1)
    by_worker: dict[int, set[int]] = {0: set(), 1: set()}
    for batch in loader(ds, 2):
        for m in batch.meta:
            by_worker[m["worker"]].add(m["field_index"])
    assert by_worker[0] and by_worker[1] and not by_worker[0] & by_worker[1]
    assert sorted(by_worker[0] | by_worker[1]) == sorted(share)
    assert sorted(keys(loader(ds, 2))) == everything(25, share)


# ---------------------------------------------------------------- (d) resume
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_sees_every_crop_once(workers: int) -> None:
    bad = ("missing-a", "missing-b")
    ds = make(20, bad=bad)
    ds.set_epoch(2)
    pos = StreamPosition(ds, workers)
    before: list[ViewBatch] = []
    for i, batch in enumerate(loader(ds, workers)):
        before.append(batch)
        pos.update(batch)
        if i == 5:
            break
    state = json.loads(json.dumps(pos.state_dict()))
    assert state["epoch"] == 2 and sum(state["consumed"]) >= 18

    again = make(20, bad=bad)
    again.load_state_dict(state)
    assert again.epoch == 2 and again.state_dict()["consumed"] == state["consumed"]
    pos2 = StreamPosition(again, workers)
    pos2.load_state_dict(state)
    after = list(loader(again, workers))
    for batch in after:
        pos2.update(batch)
    bad_fields = {1, 4}
    good = everything(20, [f for f in range(20) if f not in bad_fields])
    assert sorted(keys(before) + keys(after)) == good
    skipped = Counter(s for b in before + after for s in b.skipped_ids)
    assert set(skipped) == set(bad) and max(skipped.values()) <= CROPS
    assert pos2.consumed == [len(ds.fields_for(w, max(workers, 1), 2)) * CROPS
                             for w in range(max(workers, 1))]
    again.set_epoch(3)
    assert sum(again.state_dict()["consumed"]) == 0


def test_state_must_match_the_run() -> None:
    ds = make(12)
    pos = StreamPosition(ds, 2)
    pos.update(next(iter(loader(ds, 2))))
    state = pos.state_dict()
    with pytest.raises(ConfigError, match="seed"):
        make(12, seed=4).load_state_dict(state)
    other = make(12)
    other.load_state_dict(state)
    with pytest.raises(ConfigError, match="num_workers=2"):
        list(other)


# ---------------------------------------------------------------- (e) SIGKILL
def _write_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def run_child(folder: str, mode: str) -> None:
    """Train-loop stand-in: consume batches, commit state + consumed ids after each batch."""
    out = Path(folder) / "state.json"
    ds = make(30, sleep=0.005)
    pos = StreamPosition(ds, 2)
    if mode == "resume":
        state = json.loads(out.read_text())["state"]
        ds.load_state_dict(state)
        pos.load_state_dict(state)
        out = Path(folder) / "resumed.json"
    seen: list[list[int]] = []
    for batch in loader(ds, 2):
        pos.update(batch)
        seen += [[m["field_index"], m["crop_index"]] for m in batch.meta]
        _write_atomic(out, {"state": pos.state_dict(), "seen": seen})
        if mode == "first":
            time.sleep(0.15)


def _spawn(folder: Path, mode: str) -> subprocess.Popen[bytes]:
    code = "import sys; from tests.data.test_streaming import run_child; run_child(*sys.argv[1:])"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-c", code, str(folder), mode], cwd=REPO, env=env)


def test_sigkill_then_resume_sees_every_crop_once(tmp_path: Path) -> None:
    first = _spawn(tmp_path, "first")
    state_file = tmp_path / "state.json"
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and first.poll() is None:
        if state_file.exists() and len(json.loads(state_file.read_text())["seen"]) >= 15:
            break
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    committed = json.loads(state_file.read_text())["seen"]
    assert 15 <= len(committed) < 30 * CROPS  # killed mid-epoch

    second = _spawn(tmp_path, "resume")
    assert second.wait(30) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())["seen"]
    seen = [tuple(x) for x in committed + resumed]
    assert sorted(seen) == everything(30)


# ---------------------------------------------------------------- (f) bad fields
def test_bad_fields_are_skipped_and_counted() -> None:
    ds = make(9, bad=("missing-x", "blank-y"))
    out = list(ds)
    skipped = [it for it in out if isinstance(it, Skipped)]
    assert len(skipped) == 2 * CROPS and ds.n_skipped_fields == 2
    assert Counter(s.id for s in skipped) == {"missing-x": CROPS, "blank-y": CROPS}
    assert any("OSError" in s.reason for s in skipped)
    assert any("constant" in s.reason for s in skipped)
    batch = collate_views(out)
    assert batch.n_skipped == 2 * CROPS and batch.batch_size == 7 * CROPS


# ---------------------------------------------------------------- (g) prefetch
def test_prefetch_bounds_loads_in_flight() -> None:
    ds = make(16, prefetch=3)
    ds.load_fn = counting = CountingLoader(0.02)
    assert len(list(ds)) == 16 * CROPS
    assert 1 < counting.peak <= 3


def test_prefetch_is_faster_than_sequential() -> None:
    def run(prefetch: int) -> float:
        ds = make(16, sleep=0.02, prefetch=prefetch)
        t0 = time.perf_counter()
        assert len(list(ds)) == 16 * CROPS
        return time.perf_counter() - t0

    sequential = run(1)
    assert run(8) < 0.5 * sequential


def test_early_stop_cancels_fetches() -> None:
    ds = make(40, sleep=0.01, prefetch=4)
    ds.load_fn = counting = CountingLoader(0.01)
    it = iter(ds)
    next(it)
    it.close()  # type: ignore[attr-defined]
    time.sleep(0.1)
    assert counting.now == 0 and counting.calls <= 1 + 4 + 1
