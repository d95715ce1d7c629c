"""Periodic k-NN probe during training: embed a labelled manifest with the current encoder
and score weighted k-NN / 1-NN by cross-validation; results go to ``probe.csv``."""

from __future__ import annotations

import copy
import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biofm.core.errors import BadInputError
from biofm.eval.embed import EmbedConfig, embed_manifest
from biofm.eval.knn import evaluate_knn
from biofm.train.config import RunSection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    manifest: str
    label: str
    every: int

    @classmethod
    def from_config(cls, run: RunSection) -> Probe | None:
        if not run.probe_manifest:
            return None
        if not Path(run.probe_manifest).is_file():
            raise BadInputError(f"probe manifest {run.probe_manifest} not found",
                                "set run.probe_manifest to a labelled manifest CSV, or '' ")
        return cls(run.probe_manifest, run.probe_label, run.probe_every)

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def run(self, encoder: nn.Module, step: int, out: Path, card: dict[str, Any],
            device: torch.device) -> dict[str, Any]:
        """Score ``encoder`` (a copy is embedded in eval mode; training is left untouched)."""
        model = copy.deepcopy(encoder).eval()
        cfg = EmbedConfig(tile=int(card["tile"]), input_size=int(card["input_size"]),
                          device=str(device), progress=False)
        with torch.no_grad():
            emb, rows = embed_manifest(model, self.manifest, cfg)
        if self.label not in rows.columns:
            raise BadInputError(
                f"probe manifest has no column {self.label!r}",
                f"set run.probe_label to one of {', '.join(map(str, rows.columns))}")
        scores = evaluate_knn(emb, rows[self.label].astype(str).to_numpy(), k=10, n_splits=5)
        row = {"step": step, "n": scores["n_samples"], "classes": scores["n_classes"],
               "knn_top1": scores["knn_top1"]["mean"],
               "one_nn_macro_f1": scores["one_nn_macro_f1"]["mean"]}
        path = out / "probe.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        log.info("probe at step %d: kNN %.3f, 1-NN F1 %.3f", step, row["knn_top1"],
                 row["one_nn_macro_f1"])
        return row
