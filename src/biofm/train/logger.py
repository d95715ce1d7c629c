"""Run logs: CSV always, TensorBoard when asked for and installed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = False) -> None:
        self.path = out_dir / "log.csv"
        self._fields: list[str] | None = None
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
