"""DINO pretraining of a registered encoder on a manifest: the training loop.

Resumable: checkpoints hold model, teacher, optimiser, step, epoch, position in the epoch,
bad-sample counts and RNG state; ``pretrain`` picks up the newest one in ``run.out_dir``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from biofm.core.errors import BadInputError, BiofmError
from biofm.data.badsamples import BadSampleCounter, check_bad_fraction
from biofm.data.collate import ViewBatch, collate_views
from biofm.data.dataset import IoLoader, ManifestDataset, add_image_sizes
from biofm.data.views import MultiCropViews
from biofm.io.manifest import read_manifest
from biofm.models.io import save_encoder
from biofm.models.registry import create_model
from biofm.ssl.dino import DINO, cosine_schedule
from biofm.train import checkpoint as ckpt
from biofm.train.config import PretrainConfig
from biofm.train.logger import RunLogger
from biofm.train.sampler import EpochSampler
from biofm.train.schedules import warmup_cosine

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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dataset(cfg: PretrainConfig) -> ManifestDataset:
    d = cfg.data
    if not d.manifest:
        raise BadInputError("no training manifest given",
                            "pass --data manifest.csv (build one with 'biofm data index')")
    if not Path(d.manifest).is_file():
        raise BadInputError(f"manifest {d.manifest} not found",
                            "build it with 'biofm data index FOLDER --out manifest.csv'")
    per_field: int | str = "area" if d.crops_per_field == "area" else int(d.crops_per_field)
    root = Path(d.manifest).parent
    df = read_manifest(d.manifest)
    if per_field == "area" and not {"height", "width"} <= set(df.columns):
        log.info("measuring %d fields for crops_per_field=area", len(df))
        df = add_image_sizes(df, IoLoader(root))
    return ManifestDataset(
        df, MultiCropViews(d.views), crop_size=d.crop_size, root=root,
        crops_per_field=per_field,  # type: ignore[arg-type]
        cache_size=d.cache_fields, seed=cfg.run.seed, resize_small=d.resize_small,
        normalize=d.normalize,
    )


def param_groups(module: torch.nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not biases, norms, tokens, embeddings of ids)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_gain")) or "channel_embed" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def _state(method: DINO, opt: torch.optim.Optimizer, pos: dict[str, int],
           bad: BadSampleCounter) -> dict[str, Any]:
    return {
        "method": method.state_dict(), "optimizer": opt.state_dict(),
        "encoder": method.teacher.state_dict(), "position": pos,
        "bad": {"seen": bad.seen, "bad": bad.bad, "ids": bad.ids},
        "rng_cpu": torch.get_rng_state(),
    }


class Trainer:
    """Owns the pieces of one run; ``fit()`` runs (or resumes) it to the end."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        self.device = pick_device(cfg.run.device)
        self.dataset = build_dataset(cfg)
        self.sampler = EpochSampler(len(self.dataset), seed=cfg.run.seed)
        bs = cfg.data.batch_size
        if len(self.dataset) < bs:
            raise BadInputError(
                f"the dataset has {len(self.dataset)} crops, fewer than one batch of {bs}",
                "lower data.batch_size or use more images / crops_per_field",
            )
        self.steps_per_epoch = len(self.dataset) // bs
        total = cfg.optim.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.optim.max_steps) if cfg.optim.max_steps > 0 else total
        backbone = create_model(cfg.model.name, **cfg.model.kwargs)
        self.method = DINO(backbone, cfg.dino, self.total_steps).to(self.device)
        self.opt = torch.optim.AdamW(param_groups(self.method), lr=cfg.optim.lr,
                                     betas=(0.9, 0.999))
        self.bad = BadSampleCounter()
        self.pos = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
        self.logger: RunLogger | None = None
        self._dl: DataLoader[Any] | None = None

    # ------------------------------------------------------------------ setup
    def _loader(self) -> DataLoader[Any]:
        """One loader for the run, so persistent workers survive across epochs; the sampler
        and the dataset's shared epoch counter carry the per-epoch state."""
        if self._dl is not None:
            return self._dl
        n = self.cfg.data.num_workers
        self._dl = DataLoader(
            self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
            collate_fn=functools.partial(collate_views, n_global=self.cfg.data.views.n_global),
            num_workers=n, drop_last=True, persistent_workers=n > 0,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if n > 0 else None,
        )
        return self._dl

    def _write_run_info(self) -> None:
        resolved = dataclasses.asdict(self.cfg)
        (self.out / "config.yaml").write_text(yaml.safe_dump(_plain(resolved), sort_keys=False))
        (self.out / "run.yaml").write_text(yaml.safe_dump({
            "git_sha": git_sha(), "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch, "dataset_items": len(self.dataset),
            "device": str(self.device),
        }))

    def resume(self) -> bool:
        found = ckpt.latest_checkpoint(self.out / "checkpoints")
        if found is None:
            return False
        state, _ = ckpt.load_checkpoint(found)
        self.method.load_state_dict(state["method"])
        self.opt.load_state_dict(state["optimizer"])
        self.pos = dict(state["position"])
        b = state["bad"]
        self.bad = BadSampleCounter(seen=b["seen"], bad=b["bad"], ids=list(b["ids"]))
        torch.set_rng_state(state["rng_cpu"])
        log.info("resumed from %s (step %d)", found, self.pos["step"])
        return True

    def card(self) -> dict[str, Any]:
        """How to feed the encoder: crop (tile) size, input size, normalisation."""
        d = self.cfg.data
        lo, hi = d.views.global_scale
        tile = round(d.crop_size * ((lo + hi) / 2) ** 0.5)  # field of view of a global view
        return {"objective": "dino", "trained_steps": self.pos["step"],
                "tile": tile, "input_size": d.views.global_size,
                "normalize": _plain(dataclasses.asdict(d.normalize)),
                "training_manifest": d.manifest}

    def save(self) -> Path:
        meta = {"model_name": self.cfg.model.name, "model_kwargs": self.cfg.model.kwargs,
                "git_sha": git_sha(), "card": self.card()}
        return ckpt.save_checkpoint(self.out / "checkpoints", self.pos["step"],
                                    _state(self.method, self.opt, self.pos, self.bad), meta,
                                    keep=self.cfg.run.keep_checkpoints)

    # ------------------------------------------------------------------ step
    def _set_schedules(self, step: int) -> tuple[float, float]:
        o = self.cfg.optim
        lr = warmup_cosine(step, self.total_steps, o.lr, o.min_lr, o.warmup_steps)
        wd = cosine_schedule(o.weight_decay, o.weight_decay_end, step, self.total_steps)
        for g in self.opt.param_groups:
            g["lr"] = lr
            g["weight_decay"] = wd if g["apply_wd"] else 0.0
        return lr, wd

    def step(self, batch: ViewBatch) -> dict[str, Any]:
        step = self.pos["step"]
        lr, wd = self._set_schedules(step)
        out = self.method(batch.to(self.device, non_blocking=True))
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise DivergedError(
                f"loss became {loss.item()} at step {step}; the last good checkpoint in "
                f"{self.out / 'checkpoints'} is intact. Fix: lower optim.lr, raise "
                "optim.warmup_steps or check the data for extreme values, then resume"
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.clip_grad)
        if step < self.cfg.optim.freeze_last_layer_steps:
            self.method.student_head.prototypes.grad = None
        self.opt.step()
        self.method.on_step_end()
        return {"loss": loss.item(), "lr": lr, "weight_decay": wd,
                "teacher_temp": out["teacher_temp"], "momentum": self.method.momentum(),
                "feature_std": out["feature_std"]}

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        self._write_run_info()
        self.resume()
        self.logger = RunLogger(self.out, self.cfg.run.tensorboard)
        bar = tqdm(total=self.total_steps, initial=self.pos["step"], desc="pretrain",
                   disable=not self.cfg.run.progress, dynamic_ncols=True)
        try:
            while self.pos["step"] < self.total_steps:
                self._epoch(bar)
        finally:
            bar.close()
            self.logger.close()
        check_bad_fraction(self.bad, self.cfg.run.max_bad_fraction, min_seen=0)
        self.save()
        save_encoder(self.method.teacher, self.out / "encoder", self.card())
        return self.out

    def _epoch(self, bar: tqdm) -> None:
        epoch, start = self.pos["epoch"], self.pos["batch_in_epoch"]
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start * self.cfg.data.batch_size)
        t0, n_img = time.perf_counter(), 0
        for batch in self._loader():
            self.bad.update(batch)
            check_bad_fraction(self.bad, self.cfg.run.max_bad_fraction,
                               min_seen=min(100, len(self.dataset)))
            self.pos["batch_in_epoch"] += 1
            if batch.is_empty:
                continue
            logs = self.step(batch)
            self.pos["step"] += 1
            n_img += batch.batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}", epoch=epoch)
            step = self.pos["step"]
            if step % self.cfg.run.log_every == 0 or step == self.total_steps:
                rate = n_img / max(1e-9, time.perf_counter() - t0)
                assert self.logger is not None
                self.logger.write({"step": step, "epoch": epoch, **logs, "images_per_s": rate,
                                   "bad_samples": self.bad.bad})
            if step % self.cfg.run.checkpoint_every == 0:
                self.save()
            if step >= self.total_steps:
                return
        check_bad_fraction(self.bad, self.cfg.run.max_bad_fraction, min_seen=0)
        self.pos["epoch"] += 1
        self.pos["batch_in_epoch"] = 0


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) DINO pretraining; returns the run directory (with ``encoder/``)."""
    return Trainer(cfg).fit()
