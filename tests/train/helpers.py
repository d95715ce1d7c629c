"""Shared pieces of the trainer tests: a tiny synthetic screen and subprocess launchers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.train import checkpoint as ckpt

TINY = [
    "model.kwargs={patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}",
    "data.crop_size=32", "data.batch_size=8",
    "data.views={global_size: 24, local_size: 16, n_local: 2}",
    "dino={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}",
    "mae={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}",
    "simclr={proj_hidden_dim: 32, proj_dim: 16}",
    "weak={proj_hidden_dim: 32, proj_dim: 16}",
    "optim.warmup_steps=2", "run.progress=false", "run.log_every=1",
]


def make_screen(root: Path, n_per_treatment: int = 6, plates: int = 1) -> Path:
    cfg = SyntheticScreenConfig(n_images_per_treatment=n_per_treatment, n_plates=plates,
                                fields_per_well=2, image_size=32,
                                experiments=DEFAULT_EXPERIMENTS[:2])
    return write_screen(root, cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def train_cmd(args: list[str], nproc: int = 1) -> list[str]:
    """``biofm train`` in a fresh interpreter; under torchrun (gloo) when ``nproc > 1``."""
    if nproc == 1:
        return [sys.executable, "-m", "biofm", "train", *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            "-m", "biofm", "train", *args]


def run_train(args: list[str], nproc: int = 1, timeout: float = 300) -> None:
    res = subprocess.run(train_cmd(args, nproc), env=child_env(), capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]


def sets(items: list[str]) -> list[str]:
    out = []
    for it in items:
        out += ["--set", it]
    return out


def wait_for_checkpoint(proc: subprocess.Popen[bytes], root: Path, timeout: float) -> None:
    """Return once ``root`` holds a checkpoint; fail if ``proc`` ends first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ckpt.list_checkpoints(root):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before its first checkpoint")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")
