"""All distributed logic: every function is a no-op (or the identity) on one process.

Set up by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` in the
environment) or by tests calling :func:`init` with an explicit rank. CPU runs use gloo, GPU
runs NCCL.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as tdist


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(
        os.environ["WORLD_SIZE"]) > 1


def init(backend: str = "auto", timeout_s: float = 1800.0) -> bool:
    """Join the process group described by the environment (torchrun); False when there is
    none (one process). ``backend="auto"``: NCCL when CUDA is available, else gloo."""
    if is_dist():
        return True
    if not launched_by_torchrun():
        return False
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if is_dist():
        tdist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no gradient); returns ``t``."""
    if is_dist():
        tdist.all_reduce(t)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        tdist.all_reduce(t)
        t /= world_size()
    return t


def all_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) along dim 0 in rank order, no gradient."""
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def row_counts(t: torch.Tensor) -> torch.Tensor:
    """(W,) number of rows of ``t`` on every rank (ranks may differ: skipped samples)."""
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    return all_gather(n)


def all_gather_rows(t: torch.Tensor, counts: torch.Tensor | None = None,
                    grad: bool = False) -> torch.Tensor:
    """Concatenate every rank's rows in rank order when ranks hold different numbers of rows
    (``counts`` from :func:`row_counts`, gathered here when not given); ``grad`` keeps the
    gradient path of :func:`all_gather_grad`."""
    if not is_dist():
        return t
    counts = row_counts(t) if counts is None else counts
    m = int(counts.max())
    pad = torch.cat([t, t.new_zeros(m - t.shape[0], *t.shape[1:])])  # (m, ...)
    valid = (torch.arange(m, device=t.device)[None, :] < counts[:, None]).flatten()
    return (all_gather_grad(pad) if grad else all_gather(pad))[valid]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient of the gathered tensor and
    returns this rank's rows."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        ctx.n = t.shape[0]
        return all_gather(t)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        tdist.all_reduce(grad)
        return grad[rank() * ctx.n:(rank() + 1) * ctx.n]


def all_gather_grad(t: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather` but differentiable: the gradient of every rank's loss flows
    back to the rank that produced each row (backward sums the gradients over ranks)."""
    if not is_dist():
        return t
    out: torch.Tensor = _GatherWithGrad.apply(t)
    return out


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]
