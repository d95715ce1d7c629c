"""DINO multi-crop views of one normalised crop, each a (C_v, H, W) tensor with its names.

A *transform* in ``biofm.data`` is any callable ``(x (C, H, W) float, names, generator) ->
list[View]``; ``MultiCropViews`` gives ``n_global`` global views followed by ``n_local`` local
views, with channel dropout and shuffling drawn independently per view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from biofm.core.errors import ConfigError
from biofm.data.rng import coin
from biofm.data.transforms import (
    channel_dropout,
    channel_shuffle,
    gamma_jitter,
    intensity_jitter,
    random_dihedral,
    random_resized_crop,
    resize,
)

View = tuple[torch.Tensor, list[str]]
Transform = Callable[[torch.Tensor, list[str], torch.Generator], list[View]]


@dataclass(frozen=True)
class MultiCropConfig:
    """Views per crop and their augmentations (sizes in pixels, scales as area fractions)."""

    n_global: int = 2
    global_size: int = 64
    global_scale: tuple[float, float] = (0.4, 1.0)
    n_local: int = 4
    local_size: int = 32
    local_scale: tuple[float, float] = (0.1, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_intensity: float = 0.8
    intensity_scale: tuple[float, float] = (0.8, 1.25)
    intensity_shift: float = 0.1
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.4)
    p_channel_drop: float = 0.2
    shuffle_channels: bool = True

    def __post_init__(self) -> None:
        if self.n_global < 1 or self.n_local < 0:
            raise ConfigError(
                f"n_global={self.n_global}, n_local={self.n_local}",
                "use n_global >= 1 (DINO uses 2) and n_local >= 0",
            )
        if self.global_size < 1 or self.local_size < 1:
            raise ConfigError("view sizes must be >= 1 pixel", "set global_size/local_size")
        for name in ("global_scale", "local_scale", "ratio", "intensity_scale", "gamma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{name}=({lo}, {hi}) is not 0 < lo <= hi", f"fix {name}")
        if self.global_scale[1] > 1 or self.local_scale[1] > 1:
            raise ConfigError("crop scales are area fractions <= 1", "cap scale ranges at 1.0")
        for name in ("p_intensity", "p_gamma", "p_channel_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)}", f"give {name} in [0, 1]")


def augment_view(
    x: torch.Tensor, names: list[str], size: int, scale: tuple[float, float],
    cfg: MultiCropConfig, gen: torch.Generator,
) -> View:
    """One view: resized crop -> flip/rot90 -> intensity -> gamma -> channel drop -> shuffle."""
    v = random_resized_crop(x, size, gen, scale, cfg.ratio)
    v = random_dihedral(v, gen)
    if coin(gen, cfg.p_intensity):
        v = intensity_jitter(v, gen, cfg.intensity_scale, cfg.intensity_shift)
    if coin(gen, cfg.p_gamma):
        v = gamma_jitter(v, gen, cfg.gamma)
    v, vn = channel_dropout(v, names, cfg.p_channel_drop, gen)
    if cfg.shuffle_channels:
        v, vn = channel_shuffle(v, vn, gen)
    return v.contiguous(), vn


class MultiCropViews:
    """Callable transform: ``n_global`` global views then ``n_local`` local views."""

    def __init__(self, config: MultiCropConfig | None = None) -> None:
        self.config = config or MultiCropConfig()

    @property
    def n_global(self) -> int:
        return self.config.n_global

    def __call__(self, x: torch.Tensor, names: list[str], gen: torch.Generator) -> list[View]:
        c = self.config
        views = [augment_view(x, names, c.global_size, c.global_scale, c, gen)
                 for _ in range(c.n_global)]
        views += [augment_view(x, names, c.local_size, c.local_scale, c, gen)
                  for _ in range(c.n_local)]
        return views

    def __repr__(self) -> str:
        return f"MultiCropViews({self.config})"


class SingleView:
    """Callable transform for embedding: the crop itself, optionally resized to ``size``."""

    n_global = 1

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor, names: list[str], gen: torch.Generator) -> list[View]:
        if self.size is not None:
            x = resize(x, (self.size, self.size))
        return [(x, list(names))]
