"""DINO self-distillation (Caron et al., ICCV 2021) for packed, channel-agnostic views.

The student sees global and local views; the EMA teacher sees the global views. The loss is the
cross-entropy between the centred, sharpened teacher distribution and the student's, over every
pair of different views. Schedules (teacher temperature, EMA momentum) are in optimiser steps.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biofm.core import dist
from biofm.core.errors import ConfigError
from biofm.ssl.base import Objective, Views


@dataclass(frozen=True)
class DINOConfig:
    out_dim: int = 4096
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_steps: int = 0
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    center_momentum: float = 0.9
    centering: str = "sinkhorn"  # "sinkhorn" (Sinkhorn-Knopp, as DINOv2) or "center" (DINO)
    sinkhorn_iters: int = 3


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> prototype layer with unit-norm rows."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)  # (N, bottleneck)
        return z @ F.normalize(self.prototypes, dim=-1).T  # (N, out_dim)


def dino_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    n_student_views: int,
    n_teacher_views: int,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO loss.

    student_out: (V_s * B, K) logits, view-major (view v of image i at v * B + i);
    teacher_out: (V_t * B, K) logits of the global views, same order, V_t <= V_s and the
    first V_t student views are the same views as the teacher's; center: (K,).
    Returns the mean over pairs (t, s) with t != s of  -sum_k q_t log p_s, averaged over B.
    """
    q = F.softmax((teacher_out - center) / teacher_temp, dim=-1)
    return dino_loss_from_targets(student_out, q, n_student_views, n_teacher_views,
                                  student_temp)


def sinkhorn_knopp(teacher_out: torch.Tensor, teacher_temp: float, n_iters: int = 3
                   ) -> torch.Tensor:
    """Teacher targets (N, K) whose rows sum to 1 and whose prototypes are used about equally
    across the batch: alternating row/column normalisation of exp(logits / T).

    teacher_out: (N, K) logits of this rank's samples. Returns (N, K) probabilities. Under
    torch.distributed the prototype sums run over the global batch (all ranks), so the targets
    equal those of one process holding the whole batch.
    """
    logits = teacher_out.float() / teacher_temp
    top = dist.all_reduce_max(logits.max().detach().clone())
    q = torch.exp(logits - top).T  # (K, N)
    k = q.shape[0]
    n = dist.all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
    q = q / dist.all_reduce_sum(q.sum())
    for _ in range(n_iters):
        q = q / dist.all_reduce_sum(q.sum(dim=1, keepdim=True)) / k  # prototype mass 1/K
        q = q / q.sum(dim=0, keepdim=True) / n  # each sample gets mass 1/N
    return (q * n).T


def dino_loss_from_targets(student_out: torch.Tensor, targets: torch.Tensor,
                           n_student_views: int, n_teacher_views: int,
                           student_temp: float) -> torch.Tensor:
    """Cross-entropy of student views against teacher target distributions.

    student_out: (V_s * B, K) logits; targets: (V_t * B, K) probabilities (view-major);
    mean over pairs of different views of -sum_k q log p, averaged over B.
    """
    q = targets.chunk(n_teacher_views)
    logp = F.log_softmax(student_out / student_temp, dim=-1).chunk(n_student_views)
    total = student_out.new_zeros(())
    pairs = 0
    for t, qt in enumerate(q):
        for s, ls in enumerate(logp):
            if s == t:
                continue
            total = total + torch.sum(-qt * ls, dim=-1).mean()
            pairs += 1
    return total / pairs


def cosine_schedule(start: float, end: float, step: int, total: int) -> float:
    """Cosine from ``start`` (step 0) to ``end`` (step ``total``), constant after."""
    if total <= 0 or step >= total:
        return end
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * step / total))


class DINO(Objective):
    """Student (backbone + head), EMA teacher, running centre."""

    name = "dino"
    needs_local_views = True

    def __init__(self, backbone: nn.Module, cfg: DINOConfig, total_steps: int,
                 freeze_last_layer_steps: int = 0) -> None:
        super().__init__()
        self.freeze_last_layer_steps = freeze_last_layer_steps
        if cfg.centering not in ("sinkhorn", "center"):
            raise ConfigError(f"dino.centering={cfg.centering!r}",
                              "use 'sinkhorn' (Sinkhorn-Knopp) or 'center' (running centre)")
        self.cfg = cfg
        self.total_steps = total_steps
        dim = int(backbone.embed_dim)  # type: ignore[arg-type]
        self.student = backbone
        self.student_head = DINOHead(dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim)
        self.teacher = copy.deepcopy(backbone)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.center: torch.Tensor
        self.step: torch.Tensor
        self.register_buffer("center", torch.zeros(cfg.out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def encoder(self) -> nn.Module:
        return self.student

    @property
    def export_encoder(self) -> nn.Module:
        return self.teacher

    def step_grads(self, step: int) -> None:
        """Freeze the prototypes for the first ``freeze_last_layer_steps`` steps."""
        if step < self.freeze_last_layer_steps:
            self.student_head.prototypes.grad = None

    def teacher_temp(self) -> float:
        c, s = self.cfg, int(self.step)
        if s >= c.teacher_temp_warmup_steps:
            return c.teacher_temp
        frac = s / max(1, c.teacher_temp_warmup_steps)
        return c.warmup_teacher_temp + frac * (c.teacher_temp - c.warmup_teacher_temp)

    def momentum(self) -> float:
        c = self.cfg
        return cosine_schedule(c.momentum_start, c.momentum_end, int(self.step), self.total_steps)

    def forward(self, views: Views) -> dict[str, Any]:
        with torch.no_grad():
            t_out = self.teacher_head(self.teacher(views.global_views))  # (Vg*B, K)
        s_emb = [self.student(views.global_views)]
        if views.local_views is not None:
            s_emb.append(self.student(views.local_views))
        s_out = self.student_head(torch.cat(s_emb))  # ((Vg+Vl)*B, K)
        temp = self.teacher_temp()
        n_views = views.n_global + views.n_local
        if self.cfg.centering == "sinkhorn":
            with torch.no_grad():
                targets = sinkhorn_knopp(t_out, temp, self.cfg.sinkhorn_iters)
            loss = dino_loss_from_targets(s_out, targets, n_views, views.n_global,
                                          self.cfg.student_temp)
        else:
            loss = dino_loss(s_out, t_out, self.center, n_views, views.n_global,
                             self.cfg.student_temp, temp)
        self._update_center(t_out)
        return {"loss": loss, "teacher_temp": temp, "momentum": self.momentum(),
                "features": s_emb[0][: views.batch_size].detach()}

    @torch.no_grad()
    def _update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = dist.all_reduce_mean(teacher_out.float().mean(dim=0))
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(batch_center, alpha=1 - m)

    @torch.no_grad()
    def on_step_end(self) -> None:
        """EMA update of the teacher, then advance the step counter."""
        m = self.momentum()
        pairs = [(self.student, self.teacher), (self.student_head, self.teacher_head)]
        for src, dst in pairs:
            s_params = [p.detach() for p in src.parameters()]
            t_params = [p.detach() for p in dst.parameters()]
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, s_params, alpha=1 - m)
        self.step += 1
