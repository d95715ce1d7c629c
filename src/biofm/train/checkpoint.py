"""Atomic checkpoints: one directory per step, written under a temporary name and renamed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from biofm.core.errors import BadInputError

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def save_checkpoint(root: str | Path, step: int, state: dict[str, Any],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (tensors/primitives) and ``meta`` (JSON) for ``step`` atomically.

    A crash at any point leaves earlier checkpoints intact and never a half-written one under
    a final name. Keeps the newest ``keep`` checkpoints.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, step)
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps({**meta, "step": step}, indent=2, default=str))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = list_checkpoints(root)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file()
                  and (p / META_FILE).is_file())


def latest_checkpoint(root: str | Path) -> Path | None:
    done = list_checkpoints(root)
    return done[-1] if done else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint directory, a run directory or its ``checkpoints/`` folder."""
    p = Path(path)
    if (p / STATE_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise BadInputError(
        f"no biofm checkpoint found at {p}",
        "pass a run directory written by 'biofm train' (or one of its checkpoints/step_* "
        "folders)",
    )


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint; tensors are loaded with ``weights_only=True``."""
    ckpt = resolve_checkpoint(path)
    meta = json.loads((ckpt / META_FILE).read_text())
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    return state, meta
