"""Pretraining configuration: frozen dataclasses, YAML presets in ``configs/``, overrides.

``data.batch_size`` is the **global** batch of one optimiser step: on ``W`` processes with
``optim.accum_steps = A`` each process runs ``A`` micro-batches of ``batch_size / (W * A)``
samples per step, so a run gives the same updates on 1 or many processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biofm.data.normalize import NormalizeConfig
from biofm.data.views import MultiCropConfig
from biofm.ssl.dino import DINOConfig
from biofm.ssl.mae import MAEConfig
from biofm.ssl.simclr import SimCLRConfig
from biofm.ssl.weak import WeakConfig

OBJECTIVES = ("dino", "mae", "simclr", "wsdino", "supcon")


@dataclass(frozen=True)
class ModelSection:
    name: str = "biovit_tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    manifest: str = ""
    crop_size: int = 96
    crop_sizes: tuple[int, ...] = ()  # multi-scale: crop sides drawn from these (<= crop_size)
    nucleus_fraction: float = 1.0  # share of crops centred on a nucleus (fields with DNA)
    crops_per_field: str = "1"  # an integer, or "area" (large fields give more crops)
    resize_small: bool = True
    batch_size: int = 32  # global batch per optimiser step (all processes, all micro-batches)
    num_workers: int = 0
    cache_fields: int = 16
    views: MultiCropConfig = field(default_factory=MultiCropConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    norm_stats: str = ""  # saved statistics (scope source/reference); "" = fit on the manifest
    norm_fit_on: str = ""  # rows to fit statistics on, "column=value" (e.g. compound=DMSO)


@dataclass(frozen=True)
class OptimSection:
    epochs: int = 10
    max_steps: int = 0  # > 0 caps the run
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = 50
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    freeze_last_layer_steps: int = 0
    accum_steps: int = 1  # micro-batches per optimiser step and process
    fused: bool | None = None  # fused AdamW kernels; None: on CUDA with DDP


@dataclass(frozen=True)
class DistSection:
    strategy: str = "ddp"  # "ddp" (replicated weights) or "fsdp" (sharded, for base/large)
    backend: str = "auto"  # "auto": nccl on GPU, gloo on CPU
    find_unused_parameters: bool = False


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/biofm"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    compile: bool = False  # torch.compile the encoder's blocks (regional compilation)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    max_bad_fraction: float = 0.05
    tensorboard: bool = False
    progress: bool = True
    threads: int = 0  # 0 = torch default
    trace_samples: bool = False  # write samples_rank{r}.csv: the dataset indices of each step
    probe_manifest: str = ""  # labelled manifest for a periodic k-NN probe ("" = off)
    probe_label: str = "treatment"
    probe_every: int = 0  # steps between probes (0 = only at the end when a manifest is set)


@dataclass(frozen=True)
class PretrainConfig:
    objective: str = "dino"  # one of OBJECTIVES
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    dino: DINOConfig = field(default_factory=DINOConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    dist: DistSection = field(default_factory=DistSection)
    run: RunSection = field(default_factory=RunSection)
