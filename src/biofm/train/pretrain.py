"""Pretraining loop for every objective, on one CPU process or many GPUs under ``torchrun``.

Resumable to the sample: a checkpoint holds the objective (student, teacher, heads), optimiser,
step, epoch, the data position of every rank, bad-sample counts and RNG states; ``pretrain``
picks up the newest one in ``run.out_dir`` (on the same or another number of processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from biofm.core import dist
from biofm.core.errors import BadInputError, BiofmError
from biofm.data.badsamples import BadSampleCounter, check_bad_fraction
from biofm.data.collate import ViewBatch
from biofm.models.io import save_encoder
from biofm.ssl.dino import cosine_schedule
from biofm.ssl.monitor import effective_rank, feature_std
from biofm.train import checkpoint as ckpt
from biofm.train.build import (
    NORM_STATS_FILE,
    build_objective,
    check_config,
    make_optimizer,
    pick_device,
    wrap_parallel,
)
from biofm.train.config import PretrainConfig
from biofm.train.logger import RunLogger, SampleTrace
from biofm.train.probe import Probe
from biofm.train.schedules import warmup_cosine
from biofm.train.source import build_source
from biofm.train.state import (
    encoder_from_state,
    export_state,
    load_run_state,
    model_state,
    run_state,
)

log = logging.getLogger(__name__)


class DivergedError(BiofmError):
    """The loss became NaN or infinite."""


@functools.cache
def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Trainer:
    """Owns the pieces of one run; ``fit()`` runs (or resumes) it to the end."""

    def __init__(self, cfg: PretrainConfig) -> None:
        check_config(cfg)
        self.cfg = cfg
        dist.init(cfg.dist.backend)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.out = Path(cfg.run.out_dir)
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        self.device = pick_device(cfg.run.device)
        self.source = build_source(cfg, self.out)
        self.dataset = self.source.dataset
        if self.source.steps_per_epoch < 1:
            raise BadInputError(
                f"the data has {self.source.n_items} crops, fewer than one batch of "
                f"{cfg.data.batch_size} on every process",
                "lower data.batch_size or use more images / crops_per_field",
            )
        self.steps_per_epoch = self.source.steps_per_epoch
        total = cfg.optim.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.optim.max_steps) if cfg.optim.max_steps > 0 else total
        self.method = build_objective(cfg, self.total_steps).to(self.device)
        if cfg.run.compile:
            for enc in self.method.encoders():
                enc.compile_regions()  # type: ignore[operator]
        self.model = wrap_parallel(cfg, self.method, self.device)
        self.opt = make_optimizer(cfg, self.method, self.device)
        self.bad = BadSampleCounter()
        self.pos = {"step": 0, "epoch": 0, "step_in_epoch": 0}
        self.logger: RunLogger | None = None
        self.trace: SampleTrace | None = None
        self.probe = Probe.from_config(cfg.run)
        self._t_start = 0.0
        self._bad_total = 0

    # ------------------------------------------------------------------ setup
    def _write_run_info(self) -> None:
        if not dist.is_main():
            return
        resolved = _plain(dataclasses.asdict(self.cfg))
        (self.out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (self.out / "run.yaml").write_text(yaml.safe_dump({
            "git_sha": git_sha(), "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch, "dataset_items": self.source.n_items,
            "device": str(self.device), "world_size": self.world,
            "micro_batch": self.source.micro_batch, "torch": str(torch.__version__),
        }))

    def resume(self) -> bool:
        found = ckpt.latest_checkpoint(self.out / "checkpoints")
        if found is None:
            return False
        state, _ = ckpt.load_checkpoint(found)
        self.pos, self.bad = load_run_state(self, state)
        log.info("resumed from %s (step %d)", found, self.pos["step"])
        return True

    def card(self) -> dict[str, Any]:
        """How to feed the encoder: crop (tile) size, input size, normalisation."""
        d = self.cfg.data
        lo, hi = d.views.global_scale
        tile = round(d.crop_size * ((lo + hi) / 2) ** 0.5)  # field of view of a global view
        return {"objective": self.cfg.objective, "trained_steps": self.pos["step"],
                "tile": tile, "input_size": d.views.global_size,
                "normalize": _plain(dataclasses.asdict(d.normalize)),
                "training_manifest": d.manifest, **self._norm_stats_card()}

    def _norm_stats_card(self) -> dict[str, Any]:
        """The training data's normalisation statistics, when the run fitted any."""
        path = self.out / NORM_STATS_FILE
        return {"normalize_stats": json.loads(path.read_text())} if path.is_file() else {}

    def save(self) -> dict[str, Any]:
        """Write a checkpoint (every rank takes part in gathering; rank 0 writes); returns
        the state."""
        state = run_state(self)
        if dist.is_main():
            meta = {"model_name": self.cfg.model.name, "model_kwargs": self.cfg.model.kwargs,
                    "git_sha": git_sha(), "card": self.card(), "world_size": self.world}
            ckpt.save_checkpoint(self.out / "checkpoints", self.pos["step"], state, meta,
                                 keep=self.cfg.run.keep_checkpoints)
        dist.barrier()
        return state

    # ------------------------------------------------------------------ step
    def _set_schedules(self, step: int) -> tuple[float, float]:
        o = self.cfg.optim
        lr = warmup_cosine(step, self.total_steps, o.lr, o.min_lr, o.warmup_steps)
        wd = cosine_schedule(o.weight_decay, o.weight_decay_end, step, self.total_steps)
        for g in self.opt.param_groups:
            g["lr"] = lr
            g["weight_decay"] = wd if g["apply_wd"] else 0.0
        return lr, wd

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.run.precision == "bf16")

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        no_sync = getattr(self.model, "no_sync", None)
        if not last and callable(no_sync):
            return no_sync()
        return contextlib.nullcontext()

    def step(self, micro: list[ViewBatch]) -> dict[str, Any]:
        """One optimiser step over this rank's micro-batches; returns float logs."""
        step = self.pos["step"]
        lr, wd = self._set_schedules(step)
        self.opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        feats = []
        for k, batch in enumerate(micro):
            with self._no_sync(k == len(micro) - 1), self._autocast():
                out = self.model(batch.to(self.device, non_blocking=True))
            loss = out["loss"].float()
            self._check_finite(loss, step)
            (loss / len(micro)).backward()
            feats.append(out["features"].float())
            for key, v in out.items():
                if key not in ("loss", "features") and isinstance(v, (int, float)):
                    logs[key] = logs.get(key, 0.0) + float(v) / len(micro)
            logs["loss"] = logs.get("loss", 0.0) + loss.item() / len(micro)
        if self.cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.clip_grad)
        self.method.step_grads(step)
        self.opt.step()
        self.method.on_step_end()
        self._features = torch.cat(feats)
        return {**logs, "lr": lr, "weight_decay": wd}

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        bad = dist.all_reduce_sum((~torch.isfinite(loss.detach())).float().reshape(1))
        if bad.item() > 0:  # every process sees the same flag and stops together
            raise DivergedError(
                f"loss became {loss.item()} at step {step} (on {int(bad.item())} of "
                f"{self.world} processes); the last good checkpoint in "
                f"{self.out / 'checkpoints'} is intact. Fix: lower optim.lr, raise "
                "optim.warmup_steps or check the data for extreme values, then resume"
            )

    def _monitor(self, local_loss: float) -> dict[str, float]:
        """Global-batch loss (mean over ranks), feature std and effective rank of the global
        batch's embeddings: collectives, so only at logging steps."""
        loss = dist.all_reduce_mean(torch.tensor(local_loss, device=self.device))
        feats = dist.all_gather_rows(self._features.detach().contiguous())
        return {"loss": float(loss), "feature_std": feature_std(feats),
                "effective_rank": effective_rank(feats)}

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        self._write_run_info()
        self.resume()
        if dist.is_main():
            self.logger = RunLogger(self.out, self.cfg.run.tensorboard, self.pos["step"])
        if self.cfg.run.trace_samples:
            self.trace = SampleTrace(self.out, self.rank, self.pos["step"])
        bar = tqdm(total=self.total_steps, initial=self.pos["step"], desc="pretrain",
                   disable=not (self.cfg.run.progress and dist.is_main()), dynamic_ncols=True)
        self._t_start, self._step0 = time.perf_counter(), self.pos["step"]
        try:
            while self.pos["step"] < self.total_steps:
                self._epoch(bar)
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()
        self._check_bad(final=True)
        state = self.save()
        if dist.is_main():
            encoder = encoder_from_state(self, state["encoder"])
            save_encoder(encoder, self.out / "encoder", self.card())
            if self.probe is not None:
                self.probe.run(encoder, self.pos["step"], self.out, self.card(), self.device)
        dist.barrier()
        return self.out

    def _micro_batches(self) -> Iterator[list[ViewBatch]]:
        """Group the source's micro-batches into steps (``accum_steps`` each) until the
        epoch's last step."""
        group: list[ViewBatch] = []
        if self.pos["step_in_epoch"] >= self.steps_per_epoch:
            return
        for batch in self.source.batches(self.device):
            group.append(batch)
            if len(group) == self.cfg.optim.accum_steps:
                yield group
                group = []
                if self.pos["step_in_epoch"] >= self.steps_per_epoch:
                    return

    def _check_bad(self, final: bool = False) -> None:
        counts = dist.all_reduce_sum(torch.tensor([self.bad.seen, self.bad.bad],
                                                  dtype=torch.float64, device=self.device))
        total = BadSampleCounter(seen=int(counts[0]), bad=int(counts[1]), ids=self.bad.ids)
        self._bad_total = total.bad
        check_bad_fraction(total, self.cfg.run.max_bad_fraction,
                           min_seen=0 if final else min(100, self.source.n_items))

    def _epoch(self, bar: tqdm) -> None:
        epoch, start = self.pos["epoch"], self.pos["step_in_epoch"]
        self.source.start_epoch(epoch, start, trace=self.trace is not None)
        for micro in self._micro_batches():
            for b in micro:
                self.bad.update(b)
                self.source.used(b)
            self._check_bad()
            usable = [b for b in micro if not b.is_empty]
            if len(usable) < len(micro) and dist.is_dist():
                raise BiofmError("a whole micro-batch was unreadable on one process; "
                                 "raise data.batch_size or clean the manifest")
            step_in_epoch = self.pos["step_in_epoch"]
            logs = self.step(usable) if usable else None
            if self.trace is not None:
                idx = self.source.trace_indices(step_in_epoch, micro)
                self.trace.write(self.pos["step"] + 1, epoch, idx)
            self.pos["step"] += 1
            self.pos["step_in_epoch"] += 1
            bar.update(1)
            if logs is not None:
                self._after_step(logs, bar, epoch)
            if self.pos["step"] >= self.total_steps:
                return
        self._check_bad(final=True)
        self.pos["epoch"] += 1
        self.pos["step_in_epoch"] = 0

    def _after_step(self, logs: dict[str, Any], bar: tqdm, epoch: int) -> None:
        step, run = self.pos["step"], self.cfg.run
        bar.set_postfix(loss=f"{logs['loss']:.3f}", epoch=epoch)
        if step % run.log_every == 0 or step == self.total_steps:
            mon = self._monitor(logs["loss"])
            elapsed = time.perf_counter() - self._t_start
            done = step - self._step0
            rate = done * self.cfg.data.batch_size / max(elapsed, 1e-9)
            eta = elapsed / max(done, 1) * (self.total_steps - step)
            if self.logger is not None:
                self.logger.write({"step": step, "epoch": epoch, **logs, **mon,
                                   "samples_per_s": rate, "eta_s": eta,
                                   "bad_samples": self._bad_total})
        if step % run.checkpoint_every == 0 and step < self.total_steps:
            self.save()
        if self.probe is not None and self.probe.due(step) and step < self.total_steps:
            self._probe(step)

    def _probe(self, step: int) -> None:
        """k-NN probe of the exported encoder (gathered in full; scored on rank 0)."""
        method_state = model_state(self)
        if dist.is_main() and self.probe is not None:
            encoder = encoder_from_state(self, export_state(self, method_state))
            encoder = encoder.to(self.device)
            self.probe.run(encoder, step, self.out, self.card(), self.device)
        dist.barrier()


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) pretraining; returns the run directory (with ``encoder/``). Under
    torchrun, the process group this call creates is closed at the end."""
    owns_group = not dist.is_dist()
    try:
        return Trainer(cfg).fit()
    finally:
        if owns_group:
            dist.shutdown()

