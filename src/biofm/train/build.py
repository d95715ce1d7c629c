"""Build the pieces of a run from its config: dataset, objective, optimiser, parallel wrapper."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biofm.core import dist
from biofm.core.errors import BadInputError, ConfigError
from biofm.data.dataset import IoLoader, ManifestDataset, add_image_sizes
from biofm.data.norm_fit import fit_manifest_stats
from biofm.data.norm_stats import NormStats
from biofm.data.pairs import WeakPairDataset
from biofm.data.views import MultiCropViews
from biofm.io.manifest import read_manifest
from biofm.models.registry import create_model
from biofm.ssl.base import Objective
from biofm.ssl.dino import DINO
from biofm.ssl.mae import MAE
from biofm.ssl.simclr import SimCLR
from biofm.ssl.weak import SupCon, check_weak_columns
from biofm.train.config import OBJECTIVES, PretrainConfig

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    return torch.device(name)


def check_config(cfg: PretrainConfig) -> None:
    """Reject settings that cannot work together, naming the key to change."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"objective={cfg.objective!r} is not known",
                          f"use one of {', '.join(OBJECTIVES)}")
    if cfg.run.precision not in ("fp32", "bf16"):
        raise ConfigError(f"run.precision={cfg.run.precision!r}", "use 'fp32' or 'bf16'")
    if cfg.dist.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"dist.strategy={cfg.dist.strategy!r}", "use 'ddp' or 'fsdp'")
    if cfg.optim.accum_steps < 1:
        raise ConfigError(f"optim.accum_steps={cfg.optim.accum_steps}", "use 1 or more")
    if cfg.objective in ("simclr", "supcon", "wsdino") and cfg.data.views.n_global < 2:
        raise ConfigError(f"objective {cfg.objective} needs two global views per sample",
                          "set data.views.n_global=2")


def build_views(cfg: PretrainConfig) -> MultiCropViews:
    """The objective's views: local views only for the objectives that use them."""
    v = cfg.data.views
    if cfg.objective not in ("dino", "wsdino") and v.n_local:
        log.info("objective %s uses no local views: data.views.n_local=%d ignored",
                 cfg.objective, v.n_local)
        v = dataclasses.replace(v, n_local=0)
    if cfg.objective == "mae" and v.n_global > 1:
        v = dataclasses.replace(v, n_global=1)
    return MultiCropViews(v)


NORM_STATS_FILE = "norm_stats.json"


def training_norm_stats(cfg: PretrainConfig, df: Any, root: Path,
                        out: Path | None) -> NormStats | None:  # fmt: skip
    """Statistics of scope ``data.normalize.scope``: the run's saved ones when resuming, a
    given ``data.norm_stats`` file, or fitted on the manifest; saved as ``norm_stats.json``
    in the run directory (and its card)."""
    d = cfg.data
    if d.normalize.scope == "image":
        return None
    saved = out / NORM_STATS_FILE if out is not None else None
    if saved is not None and saved.is_file():
        return NormStats.load(saved)
    if d.norm_stats:
        stats = NormStats.load(d.norm_stats)
    else:
        log.info("fitting %s normalisation statistics on the manifest", d.normalize.scope)
        stats = fit_manifest_stats(df, d.normalize, root=root, fit_on=d.norm_fit_on or None,
                                   per_group=64, seed=cfg.run.seed)  # fmt: skip
    if saved is not None and dist.is_main():
        stats.save(saved)
    return stats


def build_dataset(cfg: PretrainConfig, out: Path | None = None
                  ) -> ManifestDataset | WeakPairDataset:  # fmt: skip
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
    if cfg.objective in ("wsdino", "supcon"):
        needs_plate = cfg.objective == "supcon"  # WS-DINO pairs by label only
        check_weak_columns(list(df.columns), dataclasses.replace(
            cfg.weak, same_plate_negatives=cfg.weak.same_plate_negatives and needs_plate))
    if per_field == "area" and not {"height", "width"} <= set(df.columns):
        log.info("measuring %d fields for crops_per_field=area", len(df))
        df = add_image_sizes(df, IoLoader(root))
    base = ManifestDataset(
        df, build_views(cfg), crop_size=d.crop_size, root=root,
        crops_per_field=per_field,  # type: ignore[arg-type]
        cache_size=d.cache_fields, seed=cfg.run.seed, resize_small=d.resize_small,
        normalize=d.normalize, norm_stats=training_norm_stats(cfg, df, root, out),
        crop_sizes=tuple(d.crop_sizes), nucleus_fraction=d.nucleus_fraction,
    )
    if cfg.objective == "wsdino":
        return WeakPairDataset(base, cfg.weak.label)
    return base


def build_objective(cfg: PretrainConfig, total_steps: int) -> Objective:
    backbone = create_model(cfg.model.name, **cfg.model.kwargs)
    if cfg.objective in ("dino", "wsdino"):
        return DINO(backbone, cfg.dino, total_steps, cfg.optim.freeze_last_layer_steps)
    if cfg.objective == "mae":
        return MAE(backbone, cfg.mae, total_steps)
    if cfg.objective == "simclr":
        return SimCLR(backbone, cfg.simclr, total_steps)
    return SupCon(backbone, cfg.weak, total_steps)


def param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not biases, norms, tokens, embeddings of ids)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_gain", "mask_token")) \
            or "channel_embed" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def make_optimizer(cfg: PretrainConfig, module: nn.Module,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW; fused kernels on CUDA with DDP (or as ``optim.fused`` says), else foreach."""
    o = cfg.optim
    fused = o.fused if o.fused is not None else (device.type == "cuda"
                                                 and cfg.dist.strategy == "ddp")
    return torch.optim.AdamW(param_groups(module), lr=o.lr, betas=o.betas,
                             fused=fused or None, foreach=None if fused else True)


def wrap_parallel(cfg: PretrainConfig, method: Objective, device: torch.device) -> nn.Module:
    """The module the training step calls: the objective itself on one process, DDP or FSDP
    around it under torchrun."""
    if not dist.is_dist():
        return method
    if cfg.dist.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # one FSDP unit per encoder: an encoder runs a data-dependent number of blocks (BioViT
        # groups images by channel count), so units inside it would gather unevenly on ranks
        for unit in method.fsdp_units():
            fully_shard(unit)
        fully_shard(method)
        return method
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        method, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=cfg.dist.find_unused_parameters,
    )
