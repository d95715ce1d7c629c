"""``biofm train --data idr:...``: pretraining streamed from the stand-in IDR over HTTP, with
exact resume of the stream mid-epoch, on one process and on two gloo processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from biofm.core.config import load_config
from biofm.core.errors import ConfigError
from biofm.idr.testing import StandInIDR
from biofm.train.config import PretrainConfig
from biofm.train.pretrain import pretrain

from .helpers import TINY, child_env, run_train, sets, train_cmd, wait_for_checkpoint

# 1 plate x 6 wells x 2 fields = 12 fields, 2 crops each: 24 crops, 3 steps of 8 per epoch
STREAM = ["data.crops_per_field=2", "data.crop_size=32", "run.trace_samples=true",
          "run.device=cpu", "optim.epochs=2"]


@pytest.fixture(scope="module")
def idr() -> Iterator[StandInIDR]:
    with StandInIDR() as server:
        server.add_study("idr0036", plates=1, wells=6, fields=2, size=96, chunk=48)
        yield server


def source(idr: StandInIDR, cache: Path) -> str:
    return f"idr:idr0036?fields=2&api={idr.url}&zarr={idr.zarr_base}&cache={cache}"


def _cfg(idr: StandInIDR, out: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [
        *TINY, *STREAM, f"data.manifest={source(idr, out.parent / 'cache')}",
        f"run.out_dir={out}", *extra])  # fmt: skip


def _trace(run: Path, ranks: int = 1) -> pd.DataFrame:
    return pd.concat([pd.read_csv(run / f"samples_rank{r}.csv") for r in range(ranks)])


def _each_crop_once_per_epoch(trace: pd.DataFrame, steps: int, batch: int = 8) -> None:
    for epoch, group in trace.groupby("epoch"):
        idx = group["index"].tolist()
        assert len(idx) == len(set(idx)) == steps * batch, epoch
        assert group["step"].nunique() == steps


def test_train_streams_idr_fields(idr: StandInIDR, tmp_path: Path) -> None:
    run = pretrain(_cfg(idr, tmp_path / "run"))
    log = pd.read_csv(run / "log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6] and log["loss"].notna().all()
    assert (run / "encoder").is_dir()
    fields = pd.read_csv(run / "idr_fields.csv")
    assert len(fields) == 12 and fields["zarr"].str.startswith(idr.zarr_base).all()
    assert "Compound Name" in fields.columns
    _each_crop_once_per_epoch(_trace(run), steps=3)


def test_stream_resumes_mid_epoch_exactly(idr: StandInIDR, tmp_path: Path) -> None:
    straight = pretrain(_cfg(idr, tmp_path / "straight"))
    stopped = tmp_path / "stopped"
    pretrain(_cfg(idr, stopped, "optim.max_steps=2", "run.checkpoint_every=1"))  # mid-epoch
    listings = idr.hits["/api/v0/m/screens/"]
    pretrain(_cfg(idr, stopped))  # resumes at step 2 of epoch 0, reading idr_fields.csv
    a, b = _trace(straight), _trace(stopped)
    assert a.values.tolist() == b.values.tolist()
    a_log, b_log = pd.read_csv(straight / "log.csv"), pd.read_csv(stopped / "log.csv")
    assert a_log["step"].tolist() == b_log["step"].tolist()
    assert (a_log["loss"] - b_log["loss"]).abs().max() < 1e-4
    # the resumed run used the saved field list instead of resolving the query again
    assert idr.hits["/api/v0/m/screens/"] == listings


def test_two_gloo_processes_share_the_stream(idr: StandInIDR, tmp_path: Path) -> None:
    run = tmp_path / "two"
    run_train(["--data", source(idr, tmp_path / "cache"), "--out", str(run),
               *sets([*TINY, *STREAM])], nproc=2)  # fmt: skip
    trace = _trace(run, ranks=2)
    _each_crop_once_per_epoch(trace, steps=3)
    for epoch in (0, 1):  # within an epoch, each field (index // crops) belongs to one rank
        r0, r1 = (set(t[t["epoch"] == epoch]["index"] // 2) for t in
                  (pd.read_csv(run / f"samples_rank{r}.csv") for r in (0, 1)))
        assert r0 and r1 and not r0 & r1, epoch


def test_stream_rejects_what_it_cannot_do(idr: StandInIDR, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="wsdino"):
        pretrain(_cfg(idr, tmp_path / "a", "objective=wsdino", "data.views.n_global=2"))
    with pytest.raises(ConfigError, match="integer number of crops"):
        pretrain(_cfg(idr, tmp_path / "b", "data.crops_per_field=area"))
    with pytest.raises(ConfigError, match=r"weak\.label"):
        pretrain(_cfg(idr, tmp_path / "c", "objective=supcon", "data.views.n_global=2",
                      "weak.label=moa"))


def test_idr_preset_loads_and_trains_on_the_stand_in(idr: StandInIDR, tmp_path: Path) -> None:
    preset = Path(__file__).parents[2] / "configs" / "biovit_small_idr.yaml"
    cfg = load_config(PretrainConfig, str(preset), [])
    assert cfg.data.manifest.startswith("idr:idr0036") and cfg.model.name == "biovit_small"
    out = tmp_path / "preset"
    small = load_config(PretrainConfig, str(preset), [
        *TINY, "model.name=biovit_tiny", "data.num_workers=0", "run.precision=fp32",
        "optim.max_steps=2", f"run.out_dir={out}",
        f"data.manifest={source(idr, tmp_path / 'cache')}&plates=1&wells=4"])  # fmt: skip
    pretrain(small)
    assert pd.read_csv(out / "log.csv")["step"].tolist() == [1, 2]


def test_sigkill_then_resume_streams_every_crop_once(idr: StandInIDR, tmp_path: Path) -> None:
    """``biofm train --data idr:...`` killed with SIGKILL after a checkpoint, then run again:
    the same crops at the same steps as an uninterrupted run. With 2 loader workers, each
    with 6 fields (12 crops, one batch of 8), an epoch has 2 steps; the first checkpoint is
    in the middle of epoch 0."""
    args = ["--data", source(idr, tmp_path / "cache"),
            *sets([*TINY, *STREAM, "data.num_workers=2", "run.checkpoint_every=1",
                   "run.keep_checkpoints=50"])]  # fmt: skip
    run_train([*args, "--out", str(tmp_path / "straight")])
    killed = tmp_path / "killed"
    idr.latency_s = 0.02  # slow the stream so the kill lands before the end
    proc = subprocess.Popen(train_cmd([*args, "--out", str(killed)]), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for_checkpoint(proc, killed / "checkpoints", timeout=120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        idr.latency_s = 0.0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (killed / "encoder").exists(), "the run finished before it was killed"
    run_train([*args, "--out", str(killed)])
    a, b = _trace(tmp_path / "straight"), _trace(killed)
    assert a.values.tolist() == b.values.tolist()
    _each_crop_once_per_epoch(b, steps=2)
