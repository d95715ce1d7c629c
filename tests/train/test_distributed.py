"""Distributed training on CPU (gloo, 2 processes under torchrun) against one process with the
same global batch; exact resume after SIGKILL; a kill during a checkpoint write."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from biofm.models.io import load_encoder
from biofm.train import checkpoint as ckpt

from .helpers import TINY, child_env, make_screen, run_train, sets, train_cmd, wait_for_checkpoint


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_screen(tmp_path_factory.mktemp("screen"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return dict(load_encoder(run / "encoder").state_dict())


def _assert_same_run(a: Path, b: Path, atol: float) -> None:
    la, lb = pd.read_csv(a / "log.csv"), pd.read_csv(b / "log.csv")
    assert la["step"].tolist() == lb["step"].tolist()
    torch.testing.assert_close(torch.tensor(la["loss"].to_numpy()),
                               torch.tensor(lb["loss"].to_numpy()), atol=atol, rtol=0)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.mark.parametrize(("objective", "strategy"), [
    ("dino", "ddp"), ("simclr", "ddp"), ("supcon", "ddp"), ("mae", "fsdp")])
def test_two_gloo_processes_match_one_process(screen: Path, tmp_path: Path,
                                              objective: str, strategy: str) -> None:
    common = [*TINY, f"objective={objective}", "optim.max_steps=4", "optim.lr=1e-3",
              "run.device=cpu", "run.trace_samples=true", "weak.label=treatment"]
    run_train(["--data", str(screen), "--out", str(tmp_path / "one"), *sets(common)])
    run_train(["--data", str(screen), "--out", str(tmp_path / "two"),
               *sets([*common, f"dist.strategy={strategy}"])], nproc=2)
    _assert_same_run(tmp_path / "one", tmp_path / "two", atol=2e-4)
    # the two ranks split every global batch: together they saw what one process saw
    one = pd.read_csv(tmp_path / "one" / "samples_rank0.csv")
    two = pd.concat([pd.read_csv(tmp_path / "two" / f"samples_rank{r}.csv") for r in (0, 1)])
    for step, group in one.groupby("step"):
        assert sorted(group["index"]) == sorted(two[two["step"] == step]["index"])
    assert (tmp_path / "two" / "log.csv").is_file()
    assert not (tmp_path / "two" / "samples_rank2.csv").exists()


def test_resume_on_another_process_count_and_strategy(screen: Path, tmp_path: Path) -> None:
    """2 steps on one process, 2 more under FSDP on two: same as 4 steps on one process."""
    common = [*TINY, "optim.lr=1e-3", "run.device=cpu", "run.checkpoint_every=2"]
    args = ["--data", str(screen), *sets(common)]
    run_train([*args, "--out", str(tmp_path / "straight"), "--set", "optim.max_steps=4"])
    run = tmp_path / "mixed"
    run_train([*args, "--out", str(run), "--set", "optim.max_steps=4",
               "--set", "optim.epochs=1", "--set", "run.checkpoint_every=2"])
    # restart the same run from its step-2 checkpoint under FSDP on two processes
    for late in ckpt.list_checkpoints(run / "checkpoints")[1:]:
        shutil.rmtree(late)
    shutil.rmtree(run / "encoder")
    run_train([*args, "--out", str(run), "--set", "optim.max_steps=4",
               "--set", "dist.strategy=fsdp"], nproc=2)
    _assert_same_run(tmp_path / "straight", run, atol=2e-4)


def test_accumulation_matches_full_batch_for_per_sample_loss(screen: Path,
                                                             tmp_path: Path) -> None:
    """MAE's loss is a mean of per-sample terms, so 2 micro-batches of 4 = one batch of 8."""
    common = [*TINY, "objective=mae", "optim.max_steps=3", "run.device=cpu"]
    run_train(["--data", str(screen), "--out", str(tmp_path / "full"), *sets(common)])
    run_train(["--data", str(screen), "--out", str(tmp_path / "accum"),
               *sets([*common, "optim.accum_steps=2"])])
    _assert_same_run(tmp_path / "full", tmp_path / "accum", atol=2e-4)


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_mid_epoch_then_resume_is_exact(screen: Path, tmp_path: Path,
                                                nproc: int) -> None:
    """SIGKILL to the whole job (every process) after its first checkpoint, then resume: the
    weights match an uninterrupted one-process run and each epoch uses every sample once."""
    # 48 fields, one crop each: 6 steps per epoch of 8
    common = [*TINY, "optim.epochs=2", "run.device=cpu",
              "run.checkpoint_every=2", "run.trace_samples=true", "run.keep_checkpoints=50"]
    args = ["--data", str(screen), *sets(common)]
    run_train([*args, "--out", str(tmp_path / "straight")])

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd([*args, "--out", str(killed)], nproc), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_checkpoint(proc, killed / "checkpoints", timeout=120)
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank, like a scheduler
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (killed / "encoder").exists(), "the run finished before it was killed"
    run_train([*args, "--out", str(killed)], nproc)  # resumes from the newest checkpoint

    _assert_same_run(tmp_path / "straight", killed, atol=2e-4 if nproc > 1 else 1e-5)
    trace = pd.concat([pd.read_csv(killed / f"samples_rank{r}.csv") for r in range(nproc)])
    steps_per_epoch = trace.groupby("epoch")["step"].nunique()
    assert steps_per_epoch.tolist() == [6, 6]
    for epoch, group in trace.groupby("epoch"):
        idx = group["index"].tolist()
        assert len(idx) == len(set(idx)) == steps_per_epoch[epoch] * 8, epoch


def test_kill_during_checkpoint_write_keeps_previous(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    script = textwrap.dedent(f"""
        import sys, time, torch
        from biofm.train import checkpoint as ckpt
        ckpt.save_checkpoint({str(root)!r}, 1, {{"w": torch.ones(3)}}, {{"model_name": "m"}})
        real_save = torch.save
        def slow_save(obj, path):
            real_save(obj, path)
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        ckpt.save_checkpoint({str(root)!r}, 2, {{"w": torch.zeros(3)}}, {{"model_name": "m"}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env=child_env())
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state, meta = ckpt.load_checkpoint(root)
    assert meta["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    # the next save clears the half-written directory
    ckpt.save_checkpoint(root, 3, {"w": torch.full((3,), 3.0)}, {"model_name": "m"})
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001", "step_00000003"]


def test_bad_samples_on_one_rank_do_not_stall_the_others(screen: Path, tmp_path: Path) -> None:
    """Corrupt and missing files leave the ranks with different batch sizes: the gathers
    (contrastive negatives, monitoring) must cope, and the bad samples are counted."""
    df = pd.read_csv(screen)
    df["paths"] = [p if Path(p).is_absolute() else str(screen.parent / p) for p in df["paths"]]
    bad = tmp_path / "corrupt.ome.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    df.loc[[0, 5, 9], "paths"] = [str(bad), str(tmp_path / "missing.tif"), str(bad)]
    manifest = tmp_path / "with_bad.csv"
    df.to_csv(manifest, index=False)
    common = [*TINY, "objective=simclr", "optim.epochs=1", "run.device=cpu",
              "run.max_bad_fraction=0.2"]
    run_train(["--data", str(manifest), "--out", str(tmp_path / "run"), *sets(common)],
              nproc=2)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["step"].tolist() == list(range(1, 7)) and log["loss"].notna().all()
    assert log["bad_samples"].iloc[-1] == 3  # counted over both ranks
    assert (tmp_path / "run" / "encoder").is_dir()
