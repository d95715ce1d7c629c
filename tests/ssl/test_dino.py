"""DINO: loss against a naive per-sample reference; schedules; EMA; one training step."""

from __future__ import annotations

import math

import numpy as np
import torch

import biofm
from biofm.core import PackedBatch
from biofm.ssl.dino import DINO, DINOConfig, cosine_schedule, dino_loss


def _naive_dino(s: np.ndarray, t: np.ndarray, c: np.ndarray, vs: int, vt: int,
                ts: float, tt: float) -> float:
    b = s.shape[0] // vs
    total, pairs = 0.0, 0
    for iq in range(vt):
        for v in range(vs):
            if v == iq:
                continue
            acc = 0.0
            for i in range(b):
                z = (t[iq * b + i] - c) / tt
                q = np.exp(z - z.max())
                q /= q.sum()
                y = s[v * b + i] / ts
                logp = y - (y.max() + math.log(np.exp(y - y.max()).sum()))
                acc += float(-(q * logp).sum())
            total += acc / b
            pairs += 1
    return total / pairs


def test_loss_matches_naive_reference() -> None:
    g = torch.Generator().manual_seed(0)
    b, k, vs, vt = 3, 7, 5, 2
    s = torch.randn(vs * b, k, generator=g, dtype=torch.float64) * 3
    t = torch.randn(vt * b, k, generator=g, dtype=torch.float64) * 3
    c = torch.randn(k, generator=g, dtype=torch.float64)
    got = dino_loss(s, t, c, vs, vt, 0.1, 0.04).item()
    want = _naive_dino(s.numpy(), t.numpy(), c.numpy(), vs, vt, 0.1, 0.04)
    assert abs(got - want) < 1e-9 * max(1.0, abs(want))


def test_cosine_schedule_endpoints() -> None:
    assert cosine_schedule(0.996, 1.0, 0, 100) == 0.996
    assert abs(cosine_schedule(0.996, 1.0, 50, 100) - 0.998) < 1e-12
    assert cosine_schedule(0.996, 1.0, 100, 100) == 1.0


class _Views:
    def __init__(self, counts: list[int]) -> None:
        g = torch.Generator().manual_seed(0)
        ims = [torch.randn(c, 32, 32, generator=g) for c in counts]
        loc = [torch.randn(c, 16, 16, generator=g) for c in counts]
        self.global_views = PackedBatch.from_images(ims + ims[::-1])
        self.local_views = PackedBatch.from_images(loc * 2)
        self.n_global, self.n_local, self.batch_size = 2, 2, len(counts)


def test_step_updates_student_teacher_centre() -> None:
    torch.manual_seed(0)
    backbone = biofm.create_model("biovit_tiny", depth=1, patch_size=8)
    cfg = DINOConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16, momentum_start=0.9,
                     teacher_temp_warmup_steps=10, warmup_teacher_temp=0.02)
    dino = DINO(backbone, cfg, total_steps=10)
    teacher0 = [p.clone() for p in dino.teacher.parameters()]
    assert dino.teacher_temp() == 0.02
    out = dino(_Views([1, 3, 5]))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert not dino.center.eq(0).all()
    out["loss"].backward()
    opt = torch.optim.SGD([p for p in dino.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    dino.on_step_end()
    assert int(dino.step) == 1
    moved = [not torch.equal(a, b) for a, b in zip(teacher0, dino.teacher.parameters(),
                                                   strict=True)]
    assert all(moved)
    assert all(not p.requires_grad for p in dino.teacher.parameters())
    assert dino.teacher_temp() > 0.02


def _naive_sinkhorn(logits: np.ndarray, temp: float, iters: int) -> np.ndarray:
    q = np.exp(logits / temp).T.copy()  # (K, N)
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        for r in range(k):
            q[r] /= q[r].sum() * k
        for c in range(n):
            q[:, c] /= q[:, c].sum() * n
    return (q * n).T


def test_sinkhorn_matches_naive_and_balances_prototypes() -> None:
    from biofm.ssl.dino import sinkhorn_knopp

    g = torch.Generator().manual_seed(1)
    logits = torch.rand(12, 6, generator=g, dtype=torch.float64) * 2 - 1
    got = sinkhorn_knopp(logits, 0.1, n_iters=3).double().numpy()
    want = _naive_sinkhorn(logits.numpy(), 0.1, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)  # each row a distribution
    many = sinkhorn_knopp(logits, 0.1, n_iters=300).numpy()
    np.testing.assert_allclose(many.sum(axis=0), 12 / 6, rtol=1e-3)  # prototypes used evenly

