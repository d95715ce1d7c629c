"""Run logs: CSV always (rank 0), TensorBoard when asked for and installed.

On resume, rows past the checkpoint's step are dropped first: those steps are run again, so the
log holds each step once.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def truncate_csv(path: Path, last_step: int, column: str = "step") -> None:
    """Drop the rows of ``path`` whose ``column`` is greater than ``last_step`` (atomic)."""
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    k = header.index(column)
    kept = [r for r in body if r and int(float(r[k])) <= last_step]
    if len(kept) == len(body):
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *kept])
    tmp.replace(path)


class RunLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = False, resume_step: int = 0) -> None:
        self.path = out_dir / "log.csv"
        self._fields: list[str] | None = None
        truncate_csv(self.path, resume_step)
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                header = next(csv.reader(fh), None)
            self._fields = header
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: pip install 'biofm[tensorboard]'; "
                            "logging to CSV only")

    def write(self, row: dict[str, Any]) -> None:
        if self._fields is None:
            self._fields = list(row)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self._fields)
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self._fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class SampleTrace:
    """``samples_rank{r}.csv``: one row per sample a step used (step, epoch, index)."""

    def __init__(self, out_dir: Path, rank: int, resume_step: int) -> None:
        self.path = out_dir / f"samples_rank{rank}.csv"
        truncate_csv(self.path, resume_step)
        if not self.path.is_file():
            self.path.write_text("step,epoch,index\n")

    def write(self, step: int, epoch: int, indices: list[int]) -> None:
        with open(self.path, "a") as fh:
            fh.writelines(f"{step},{epoch},{i}\n" for i in indices)
