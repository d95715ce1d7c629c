"""``StreamingFieldDataset``: crops of remote fields (e.g. IDR), fetched concurrently, resumable.

Order. Each epoch visits a permutation of the field indices fixed by (seed, epoch). Fields are
dealt to ranks, then to the DataLoader workers of a rank, interleaved::

    fields of (rank r, worker w) = order[r + world_size * w :: world_size * num_workers]

so rank ``r`` owns ``order[r::world_size]`` and its workers split that share without overlap.
Shares may differ by one field between ranks (no padding, no dropping: each field is seen
exactly once per epoch). Each field gives ``crops_per_field`` consecutive items whose
randomness comes from ``generator_for(seed, epoch, field_index, crop)``; items have the format
of ``ManifestDataset`` (``collate_views`` packs them). Inside each worker a thread pool keeps
``prefetch`` fields loading ahead, in order, so at most ``prefetch`` fetches are in flight.

Resume. DataLoader workers are separate processes that run ahead of the training loop, so
only the *consumer* knows what was used. A worker's items reach the loop in the worker's own
order, so "what worker ``w`` has delivered" is a prefix of its stream: one integer per worker.
Items carry ``meta["worker"]`` and ``meta["seq"]`` (position in that worker's stream of the
epoch); :class:`StreamPosition` turns the batches the loop actually used into
``{"epoch", "seed", "num_workers", "consumed": [items per worker], ...}`` and
``load_state_dict`` makes each worker skip its consumed prefix (skipped fields are never
fetched). The unit is the crop: a field whose crops were partly consumed resumes at its next
crop, so a run killed after its last saved state and resumed from it neither repeats nor
loses an item. A non-empty state needs the same rank, world size and number of workers;
``set_epoch`` to another epoch clears it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from biofm.core import dist
from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadSampleError, ConfigError
from biofm.data.collate import Item, Skipped, ViewBatch
from biofm.data.crops import PreparedField
from biofm.data.dataset import LOAD_ERRORS, LoadFn, field_item, prepare_field
from biofm.data.norm_stats import NormStats
from biofm.data.normalize import NormalizeConfig
from biofm.data.rng import generator_for
from biofm.data.views import Transform

log = logging.getLogger(__name__)

MAX_WORKERS = 256
"""Most DataLoader workers whose positions a state can hold."""
_ERRORS: tuple[type[BaseException], ...] = (*LOAD_ERRORS, BadSampleError)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of ``range(n)`` visited in ``epoch``."""
    return torch.randperm(n, generator=generator_for(seed, epoch)).tolist()


def _worker() -> tuple[int, int]:
    """(worker id, number of workers); (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class StreamingFieldDataset(IterableDataset[Item]):
    """Crops of fields read by ``load_fn(ref)`` -> ``{"views", "id", "meta", "n_global"}`` or
    ``Skipped`` (one per crop of a field that fails to load; ``n_skipped_fields`` counts them
    in the iterating process). See the module docstring for order and resume."""

    def __init__(
        self,
        refs: Sequence[Mapping[str, Any]],
        load_fn: LoadFn,
        transform: Transform | None = None,
        *,
        crop_size: int | None,
        crops_per_field: int = 1,
        seed: int = 0,
        normalize: NormalizeConfig | None = None,
        prefetch: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
        nucleus_fraction: float = 1.0,
        resize_small: bool = False,
        vocab: ChannelVocab = DEFAULT_VOCAB,
        norm_stats: NormStats | None = None,
    ) -> None:
        self.refs = [dict(r) for r in refs]
        self.norm_stats = norm_stats
        self.load_fn = load_fn
        self.transform = transform
        self.crop_size = crop_size
        self.crops_per_field = int(crops_per_field)
        self.seed = int(seed)
        self.normalize = normalize or NormalizeConfig()
        self.prefetch = int(prefetch)
        self.rank = dist.rank() if rank is None else int(rank)
        self.world_size = dist.world_size() if world_size is None else int(world_size)
        self.nucleus_fraction = nucleus_fraction
        self.resize_small = resize_small
        self.vocab = vocab
        self._check()
        # shared memory, so persistent workers see set_epoch/load_state_dict:
        # [epoch, num_workers of the loaded state (0: none), consumed per worker ...]
        self._shared = torch.zeros(2 + MAX_WORKERS, dtype=torch.long).share_memory_()
        self.n_skipped_fields = 0

    def _check(self) -> None:
        if self.crop_size is not None and self.crop_size < 1:
            raise ConfigError(f"crop_size={self.crop_size}", "give a crop size >= 1, or None")
        if self.crops_per_field < 1:
            raise ConfigError(f"crops_per_field={self.crops_per_field}", "give an integer >= 1")
        if self.prefetch < 1:
            raise ConfigError(f"prefetch={self.prefetch}", "give 1 or more concurrent fetches")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank={self.rank}, world_size={self.world_size}",
                              "give 0 <= rank < world_size")

    # ------------------------------------------------------------------ order and state
    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the order and randomness of ``epoch``; a saved position of another epoch is
        cleared (the new epoch starts from its beginning)."""
        if int(epoch) != self.epoch:
            self._shared[1:] = 0
        self._shared[0] = int(epoch)

    def sample_id(self, field_index: int) -> str:
        return str(self.refs[field_index].get("id") or f"field{field_index}")

    def fields_for(self, worker: int, num_workers: int, epoch: int | None = None) -> list[int]:
        """Field indices of (this rank, ``worker`` of ``num_workers``) in ``epoch``, in order."""
        order = epoch_order(len(self.refs), self.seed, self.epoch if epoch is None else epoch)
        step = self.world_size * num_workers
        return order[self.rank + self.world_size * worker::step]

    def state_dict(self) -> dict[str, Any]:
        """The position the next iteration starts from (as loaded, or the epoch's start)."""
        nw = int(self._shared[1])
        return self.state_for(self.epoch, max(nw, 1), self._shared[2:2 + nw].tolist() or [0])

    def state_for(self, epoch: int, num_workers: int, consumed: list[int]) -> dict[str, Any]:
        """A state in the format of ``state_dict`` (used by ``StreamPosition``)."""
        return {"epoch": epoch, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "crops_per_field": self.crops_per_field,
                "num_workers": num_workers, "consumed": [int(c) for c in consumed]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration skip what ``state`` (from ``StreamPosition``) consumed."""
        consumed = [int(c) for c in state["consumed"]]
        mine = (self.seed, self.rank, self.world_size, self.crops_per_field)
        theirs = (int(state["seed"]), int(state["rank"]), int(state["world_size"]),
                  int(state["crops_per_field"]))
        if theirs != mine:
            raise ConfigError(
                f"data state of (seed, rank, world_size, crops_per_field)={theirs} loaded into "
                f"a dataset with {mine}", "resume with the settings of the saved run")
        if len(consumed) != int(state["num_workers"]) or len(consumed) > MAX_WORKERS:
            raise ConfigError(f"data state has {len(consumed)} positions for "
                              f"{state['num_workers']} workers", "pass an unmodified state")
        self._shared[1:] = 0
        self._shared[0] = int(state["epoch"])
        self._shared[1] = len(consumed)
        self._shared[2:2 + len(consumed)] = torch.tensor(consumed, dtype=torch.long)

    def _start(self, worker: int, num_workers: int) -> int:
        """Items of this worker's stream already consumed according to the loaded state."""
        nw = int(self._shared[1])
        consumed = self._shared[2:2 + nw]
        if nw == 0 or not bool(consumed.any()):
            return 0
        if nw != num_workers:
            raise ConfigError(
                f"the data state was saved with {nw} loader workers, this run has "
                f"{num_workers}", f"resume with num_workers={nw if nw > 1 else 0}")
        return int(consumed[worker])

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Item]:
        worker, num_workers = _worker()
        first, crop0 = divmod(self._start(worker, num_workers), self.crops_per_field)
        fields = self.fields_for(worker, num_workers)[first:]
        for j, (f, prepared) in enumerate(self._fetch(fields), start=first):
            if isinstance(prepared, Skipped):
                self.n_skipped_fields += 1
            yield from self._items(f, prepared, worker, j, crop0 if j == first else 0)

    def _fetch(self, fields: Iterable[int]) -> Iterator[tuple[int, PreparedField | Skipped]]:
        """Prepared fields in order, ``prefetch`` of them loading ahead in threads."""
        pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="biofm-fetch")
        todo = iter(fields)
        pending: deque[tuple[int, Future[PreparedField | Skipped]]] = deque()
        stop = threading.Event()  # set when the consumer stops: running fetches end quietly
        try:
            for f in todo:
                pending.append((f, pool.submit(self._prepare, f, stop)))
                if len(pending) == self.prefetch:
                    break
            while pending:
                f, future = pending.popleft()
                prepared = future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._prepare, nxt, stop)))
                yield f, prepared
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, field_index: int, stop: threading.Event | None = None
                 ) -> PreparedField | Skipped:  # fmt: skip
        """Load, normalise and fit one field (in a fetch thread); Skipped when unusable.
        Failures after ``stop`` (the consumer has gone) are not logged."""
        sid = self.sample_id(field_index)
        ref = self.refs[field_index]
        try:
            return prepare_field(self.load_fn(ref), ref, sid, self.crop_size,
                                 normalize=self.normalize, resize_small=self.resize_small,
                                 vocab=self.vocab, stats=self.norm_stats)
        except _ERRORS as err:
            if stop is None or not stop.is_set():
                log.warning("skipping bad sample %s: %s", sid, err)
            return Skipped(sid, f"{type(err).__name__}: {err}")

    def _items(
        self, f: int, prepared: PreparedField | Skipped, worker: int, j: int, crop0: int
    ) -> Iterator[Item]:
        """Crops ``crop0..`` of field ``f``, the ``j``-th field of this worker's stream."""
        cpf = self.crops_per_field
        for k in range(crop0, cpf):
            if isinstance(prepared, Skipped):
                yield prepared
                continue
            gen = generator_for(self.seed, self.epoch, f, k)
            meta = {**prepared.meta, "index": f * cpf + k, "field_index": f, "crop_index": k,
                    "worker": worker, "seq": j * cpf + k, "epoch": self.epoch}
            yield field_item(prepared, meta, gen, self.crop_size, self.nucleus_fraction,
                             self.transform)


class StreamPosition:
    """The training loop's record of what it consumed from a ``StreamingFieldDataset``.

    Call ``update(batch)`` with every batch actually used (a ``ViewBatch`` or a list of
    items), save ``state_dict()`` with the checkpoint, and on resume pass it to both
    ``dataset.load_state_dict`` (before iterating) and ``load_state_dict`` here. Skipped items
    carry only their id: when ids are unique they advance the position too (otherwise a
    skipped field after a batch's last usable item may be met, and skipped, again).
    """

    def __init__(self, dataset: StreamingFieldDataset, num_workers: int) -> None:
        self.dataset = dataset
        self.num_workers = max(1, int(num_workers))
        self.n_skipped = 0
        ids = [dataset.sample_id(i) for i in range(len(dataset.refs))]
        self._index = {s: i for i, s in enumerate(ids)} if len(set(ids)) == len(ids) else None
        self._where: dict[int, tuple[int, int]] | None = None
        self.set_epoch(dataset.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Start counting ``epoch`` from its beginning."""
        self.epoch = int(epoch)
        self.consumed = [0] * self.num_workers
        self._where = None

    def _advance(self, worker: int, items: int) -> None:
        self.consumed[worker] = max(self.consumed[worker], items)

    def _skipped(self, sid: str) -> None:
        """A skipped item of field ``sid``: the whole (unusable) field counts as consumed."""
        f = self._index.get(sid) if self._index is not None else None
        if f is None:
            return
        if self._where is None:
            self._where = {
                field: (w, j) for w in range(self.num_workers)
                for j, field in enumerate(self.dataset.fields_for(w, self.num_workers, self.epoch))
            }
        worker, j = self._where[f]
        self._advance(worker, (j + 1) * self.dataset.crops_per_field)

    def update(self, batch: ViewBatch | Sequence[Item]) -> None:
        """Record a batch the loop has used."""
        if isinstance(batch, ViewBatch):
            metas, skipped = batch.meta, batch.skipped_ids
            self.n_skipped += batch.n_skipped
        else:
            metas = [it["meta"] for it in batch if isinstance(it, dict)]
            skipped = [it.id for it in batch if isinstance(it, Skipped)]
            self.n_skipped += len(skipped)
        for meta in metas:
            self._advance(int(meta["worker"]), int(meta["seq"]) + 1)
        for sid in skipped:
            self._skipped(sid)

    def state_dict(self) -> dict[str, Any]:
        """The dataset state that resumes right after the batches recorded so far."""
        return self.dataset.state_for(self.epoch, self.num_workers, self.consumed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.set_epoch(int(state["epoch"]))
        consumed = [int(c) for c in state["consumed"]]
        if len(consumed) == self.num_workers:
            self.consumed = consumed
        elif any(consumed):
            raise ConfigError(f"state for {len(consumed)} workers, loader has "
                              f"{self.num_workers}", "resume with the saved num_workers")
