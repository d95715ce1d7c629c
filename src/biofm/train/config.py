"""Pretraining configuration: frozen dataclasses, YAML presets in ``configs/``, overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biofm.data.normalize import NormalizeConfig
from biofm.data.views import MultiCropConfig
from biofm.ssl.dino import DINOConfig


@dataclass(frozen=True)
class ModelSection:
    name: str = "biovit_tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    manifest: str = ""
    crop_size: int = 96
    crops_per_field: str = "1"  # an integer, or "area" (large fields give more crops)
    resize_small: bool = True
    batch_size: int = 32
    num_workers: int = 0
    cache_fields: int = 16
    views: MultiCropConfig = field(default_factory=MultiCropConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)


@dataclass(frozen=True)
class OptimSection:
    epochs: int = 10
    max_steps: int = 0  # > 0 caps the run
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = 50
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    clip_grad: float = 3.0
    freeze_last_layer_steps: int = 0


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/biofm"
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    max_bad_fraction: float = 0.05
    tensorboard: bool = False
    progress: bool = True
    threads: int = 0  # 0 = torch default


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    dino: DINOConfig = field(default_factory=DINOConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
