"""Distributed helpers; every function is a no-op on one process."""

from __future__ import annotations

import torch
import torch.distributed as tdist


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        tdist.all_reduce(t)
    return t
