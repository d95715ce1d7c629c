"""Where a run's batches come from: a manifest (map-style, `EpochSampler`) or a stream.

Both sources give the trainer the same things: ``steps_per_epoch``, ``micro_batch``, a loader
of ``ViewBatch`` micro-batches for an epoch, the dataset indices of a step (for the sample
trace) and a per-rank ``state_dict`` for checkpoints.

``data.manifest: idr:STUDY?...`` streams fields from IDR (`biofm.idr.query`): rank 0 resolves
the query once and saves the field list as ``idr_fields.csv`` in the run directory, which a
resumed run reads back, so the fields (and hence the order) never change within a run. Each
epoch visits every field once; a rank's share is dealt to its loader workers, whose positions
are saved with every checkpoint (`StreamPosition`), so a resumed run continues at the next
unused crop. A stream resumes only on the same number of processes and loader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from biofm.core import dist
from biofm.core.errors import BadInputError, ConfigError
from biofm.data.collate import ViewBatch, collate_views
from biofm.data.dataset import ManifestDataset
from biofm.data.pairs import WeakPairDataset
from biofm.data.streaming import StreamingFieldDataset, StreamPosition
from biofm.data.views import MultiCropViews
from biofm.train.config import PretrainConfig
from biofm.train.sampler import EpochSampler

log = logging.getLogger(__name__)
FIELDS_FILE = "idr_fields.csv"


def _loader_kw(num_workers: int, device: torch.device) -> dict[str, Any]:
    return {"collate_fn": collate_views, "num_workers": num_workers, "drop_last": True,
            "persistent_workers": num_workers > 0, "pin_memory": device.type == "cuda",
            "prefetch_factor": 4 if num_workers > 0 else None}  # fmt: skip


class MapSource:
    """Crops of a manifest, in the global order of `EpochSampler`."""

    def __init__(self, cfg: PretrainConfig, dataset: ManifestDataset | WeakPairDataset) -> None:
        self.cfg, self.dataset = cfg, dataset
        self.sampler = EpochSampler(len(dataset), cfg.data.batch_size, seed=cfg.run.seed,
                                    rank=dist.rank(), world_size=dist.world_size(),
                                    accum_steps=cfg.optim.accum_steps)  # fmt: skip
        self.micro_batch = self.sampler.micro_batch
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.n_items = len(dataset)
        self._dl: DataLoader[Any] | None = None
        self._order: list[int] = []

    def start_epoch(self, epoch: int, step_in_epoch: int, trace: bool) -> None:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, step_in_epoch)
        self._order = self.sampler.order() if trace else []

    def batches(self, device: torch.device) -> Iterator[ViewBatch]:
        """This rank's micro-batches from the step set by `start_epoch`."""
        if self._dl is None:  # one loader, so persistent workers survive across epochs
            self._dl = DataLoader(
                self.dataset,
                batch_size=self.micro_batch,
                sampler=self.sampler,
                **_loader_kw(self.cfg.data.num_workers, device),
            )
        return iter(self._dl)

    def used(self, batch: ViewBatch) -> None:
        """A micro-batch the step used (the sampler already knows the position)."""

    def trace_indices(self, step_in_epoch: int, micro: list[ViewBatch]) -> list[int]:
        return [i for m in self.sampler.step_indices(self._order, step_in_epoch) for i in m]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Nothing to restore: the step in the epoch places the sampler."""


class StreamSource:
    """Crops of fields streamed by a `StreamingFieldDataset` (see the module docstring)."""

    def __init__(self, cfg: PretrainConfig, dataset: StreamingFieldDataset) -> None:
        parts = dist.world_size() * cfg.optim.accum_steps
        if cfg.data.batch_size % parts:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} does not split into "
                              f"{dist.world_size()} processes x {cfg.optim.accum_steps} steps",
                              f"use a multiple of {parts}")  # fmt: skip
        self.cfg, self.dataset = cfg, dataset
        self.micro_batch = cfg.data.batch_size // parts
        self.workers = max(1, cfg.data.num_workers)
        self.position = StreamPosition(dataset, self.workers)
        self.steps_per_epoch = self._steps()
        self.n_items = len(dataset.refs) * dataset.crops_per_field
        self._dl: DataLoader[Any] | None = None
        self._loaded_epoch: int | None = None

    def _steps(self) -> int:
        """Steps every rank can make: a worker yields whole micro-batches of its own items."""
        n, world, nw = len(self.dataset.refs), self.dataset.world_size, self.workers
        cpf = self.dataset.crops_per_field
        per_rank = [sum(len(range(r + world * w, n, world * nw)) * cpf // self.micro_batch
                        for w in range(nw)) for r in range(world)]  # fmt: skip
        return min(per_rank) // self.cfg.optim.accum_steps

    def start_epoch(self, epoch: int, step_in_epoch: int, trace: bool) -> None:
        if self._loaded_epoch == epoch:  # resuming inside this epoch: keep the loaded position
            self._loaded_epoch = None
            return
        self._loaded_epoch = None
        self.dataset.set_epoch(epoch)
        self.position.set_epoch(epoch)

    def batches(self, device: torch.device) -> Iterator[ViewBatch]:
        if self._dl is None:
            self._dl = DataLoader(
                self.dataset,
                batch_size=self.micro_batch,
                **_loader_kw(self.cfg.data.num_workers, device),
            )
        return iter(self._dl)

    def used(self, batch: ViewBatch) -> None:
        self.position.update(batch)

    def trace_indices(self, step_in_epoch: int, micro: list[ViewBatch]) -> list[int]:
        return [int(m["index"]) for b in micro for m in b.meta]

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.position.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore this rank's stream position (saved on the same rank and worker count)."""
        stream = (state or {}).get("stream")
        if stream is None:
            return
        self.dataset.load_state_dict(stream)
        self.position.load_state_dict(stream)
        self._loaded_epoch = int(stream["epoch"])


# ---------------------------------------------------------------------------------- building
def _resolve_rows(cfg: PretrainConfig, out: Path) -> list[dict[str, Any]]:
    """The run's field list: read from the run directory, else resolved on rank 0."""
    from biofm.idr.http import IDRClient
    from biofm.idr.query import parse_query, resolve_fields

    q = parse_query(cfg.data.manifest)
    saved = out / FIELDS_FILE
    rows: list[dict[str, Any]] | None = None
    if dist.is_main():
        if saved.is_file():
            table = pd.read_csv(saved, keep_default_na=False)
            rows = [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]
            log.info("using the %d IDR fields listed in %s", len(rows), saved)
        else:
            with IDRClient(q.api) as client:
                rows = resolve_fields(q, client)
            pd.DataFrame(rows).to_csv(saved, index=False)
            log.info("resolved %s to %d fields (saved in %s)", q.text, len(rows), saved)
    return list(dist.broadcast_object(rows))


def build_stream(cfg: PretrainConfig, views: MultiCropViews, out: Path) -> StreamingFieldDataset:
    """The streaming dataset of an ``idr:`` source."""
    from biofm.idr.query import IDRFieldLoader, parse_query
    from biofm.ssl.weak import check_weak_columns

    d = cfg.data
    if cfg.objective == "wsdino":
        raise ConfigError(
            "objective wsdino pairs fields at random, which a stream cannot do",
            "use objective=supcon with an idr: source, or mirror the fields "
            "first with 'biofm idr fetch' and train on the manifest it writes",
        )
    if not str(d.crops_per_field).isdigit() or int(d.crops_per_field) < 1:
        raise ConfigError(
            f"data.crops_per_field={d.crops_per_field!r} with an idr: source",
            "give an integer number of crops per field (field sizes are not "
            "known before streaming)",
        )
    q = parse_query(d.manifest)
    rows = _resolve_rows(cfg, out)
    if cfg.objective == "supcon":
        check_weak_columns(list(rows[0]), cfg.weak)
    if not rows:
        raise BadInputError(f"{d.manifest} selects no fields", "widen the query")
    return StreamingFieldDataset(
        rows, IDRFieldLoader(q), views, crop_size=d.crop_size,
        crops_per_field=int(d.crops_per_field), seed=cfg.run.seed, normalize=d.normalize,
        resize_small=d.resize_small, norm_stats=_stream_stats(cfg, out),
    )  # fmt: skip


def _stream_stats(cfg: PretrainConfig, out: Path) -> Any:
    """A stream cannot be fitted before it is read: scope source/reference needs a saved
    statistics file (``data.norm_stats``), kept with the run."""
    from biofm.data.norm_stats import NormStats
    from biofm.train.build import NORM_STATS_FILE

    d = cfg.data
    if d.normalize.scope == "image":
        return None
    if not d.norm_stats:
        raise ConfigError(
            f"data.normalize.scope={d.normalize.scope} with an idr: source needs statistics",
            "fit them on a mirrored sample ('biofm idr fetch' then 'biofm data norm-stats') "
            "and pass data.norm_stats=FILE, or use data.normalize.scope=image",
        )
    stats = NormStats.load(d.norm_stats)
    if dist.is_main():
        stats.save(out / NORM_STATS_FILE)
    return stats


def build_source(cfg: PretrainConfig, out: Path) -> MapSource | StreamSource:
    """A `StreamSource` for an ``idr:`` data source, else a `MapSource` over the manifest."""
    from biofm.idr.query import is_idr_source
    from biofm.train.build import build_dataset, build_views

    if is_idr_source(cfg.data.manifest):
        return StreamSource(cfg, build_stream(cfg, build_views(cfg), out))
    return MapSource(cfg, build_dataset(cfg, out))
