"""SimCLR / SupCon losses against a naive loop reference; 2-process gloo run equals 1 process;
one SimCLR training step."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import socket
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import biofm
from biofm.core import PackedBatch
from biofm.core.errors import ConfigError
from biofm.ssl.simclr import SimCLR, SimCLRConfig, nt_xent_loss, supcon_loss
from biofm.ssl.weak import SupCon, WeakConfig


def _naive_supcon(z: np.ndarray, labels: np.ndarray, t: float,
                  anchors: list[int] | None = None, neg: np.ndarray | None = None) -> float:
    n = len(z)
    losses = []
    for i in anchors if anchors is not None else range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if not pos:
            continue
        den = pos + [j for j in range(n) if labels[j] != labels[i]
                     and (neg is None or neg[i, j])]
        log_den = math.log(sum(math.exp(float(z[i] @ z[a]) / t) for a in den))
        losses.append(-sum(float(z[i] @ z[p]) / t - log_den for p in pos) / len(pos))
    return sum(losses) / len(losses)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def test_supcon_matches_naive_reference() -> None:
    z = _unit(12, 5, 0)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 0, 1, 2, 4, 4, 5])  # 3 and 5 have no positives
    got = supcon_loss(z, labels, 0.2).item()
    assert abs(got - _naive_supcon(z.numpy(), labels.numpy(), 0.2)) < 1e-10


def test_supcon_neg_mask_and_anchor_subsets() -> None:
    z = _unit(10, 4, 1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 3, 3])
    g = torch.Generator().manual_seed(2)
    neg = torch.rand(10, 10, generator=g) < 0.5
    want = _naive_supcon(z.numpy(), labels.numpy(), 0.1, [1, 2, 5, 9], neg.numpy())
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 2, 5, 9]] = True
    for anchors in (mask, torch.tensor([1, 2, 5, 9])):
        got = supcon_loss(z, labels, 0.1, anchors=anchors, neg_mask=neg).item()
        assert abs(got - want) < 1e-10


def test_supcon_without_positives_is_zero_and_differentiable() -> None:
    z = _unit(4, 3, 3).requires_grad_(True)
    loss = supcon_loss(z, torch.arange(4), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None and not z.grad.any()


def test_nt_xent_two_views_is_the_textbook_formula() -> None:
    b, t = 5, 0.3
    z = _unit(2 * b, 6, 4)
    sim = (z @ z.T).numpy() / t
    want = 0.0
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        den = sum(math.exp(sim[i, k]) for k in range(2 * b) if k != i)
        want += -math.log(math.exp(sim[i, j]) / den)
    assert abs(nt_xent_loss(z, 2, t).item() - want / (2 * b)) < 1e-10
    z3 = _unit(3 * b, 6, 5)
    labels = np.arange(3 * b) % b
    assert abs(nt_xent_loss(z3, 3, t).item() - _naive_supcon(z3.numpy(), labels, t)) < 1e-10


def test_supcon_is_stable_at_low_temperature() -> None:
    z = _unit(8, 4, 6).float().requires_grad_(True)
    loss = supcon_loss(z, torch.arange(8) % 4, 1e-3)
    loss.backward()
    assert torch.isfinite(loss) and z.grad is not None and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------- objectives, 2 ranks
class _Flat(nn.Module):
    """Stand-in backbone: one linear layer on the flattened 1-channel planes."""

    embed_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, self.embed_dim)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.lin(batch.planes.reshape(batch.planes.shape[0], -1))


class _FlatViews:
    """Two global 1-channel 4x4 views of each of samples ``idx`` of a fixed batch of 8."""

    def __init__(self, idx: list[int]) -> None:
        g = torch.Generator().manual_seed(7)
        x = torch.randn(2, 8, 1, 4, 4, generator=g)  # (view, sample, C, H, W)
        ims = [x[v, i] for v in range(2) for i in idx]
        self.global_views = PackedBatch.from_images(ims)
        self.local_views = None
        self.n_global, self.n_local, self.batch_size = 2, 0, len(idx)
        self.meta = [{"index": i, "treatment": ["a", "b", "c"][i % 3], "plate": f"p{i // 4}"}
                     for i in idx]


def _objectives() -> list[nn.Module]:
    torch.manual_seed(0)
    simclr = SimCLR(_Flat(), SimCLRConfig(0.2, 8, 5), total_steps=1)
    torch.manual_seed(0)
    supcon = SupCon(_Flat(), WeakConfig(temperature=0.2, proj_hidden_dim=8, proj_dim=5), 1)
    return [simclr, supcon]


def _run(idx: list[int]) -> list[tuple[float, list[np.ndarray]]]:
    out = []
    for obj in _objectives():
        loss = obj(_FlatViews(idx))["loss"]
        loss.backward()
        grads = [p.grad for p in obj.parameters()]
        out.append((loss.item(), [g.numpy().copy() for g in grads if g is not None]))
    return out


def _rank_main(rank: int, port: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        even = _run([0, 1, 2, 3] if rank == 0 else [4, 5, 6, 7])
        uneven = _run([0, 1, 2] if rank == 0 else [3, 4, 5, 6, 7])  # padded gather
        queue.put((rank, (even, [loss for loss, _ in uneven])))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_match_one_process() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
    whole, half = _run(list(range(8))), _run([0, 1, 2, 3])
    for k, (loss1, grads1) in enumerate(whole):
        (l0, g0), (l1, g1) = results[0][0][k], results[1][0][k]
        assert abs((l0 + l1) / 2 - loss1) < 1e-6
        assert abs(l0 - half[k][0]) > 1e-3  # rank 0 did contrast against rank 1's rows
        for a, b, ref in zip(g0, g1, grads1, strict=True):
            np.testing.assert_allclose((a + b) / 2, ref, atol=1e-6)
        # uneven split (3 + 5 samples): anchor-weighted mean of the ranks' losses
        u0, u1 = results[0][1][k], results[1][1][k]
        assert abs((3 * u0 + 5 * u1) / 8 - loss1) < 1e-6


# ---------------------------------------------------------------------- training step
class _Views:
    def __init__(self, counts: list[int], n_global: int = 2) -> None:
        g = torch.Generator().manual_seed(0)
        ims = [torch.randn(c, 32, 32, generator=g) for c in counts]
        self.global_views = PackedBatch.from_images((ims + ims[::-1])[: n_global * len(ims)])
        self.local_views = None
        self.n_global, self.n_local, self.batch_size = n_global, 0, len(counts)
        self.meta: list[dict[str, Any]] = [{"index": i} for i in range(len(counts))]


def test_simclr_step_trains_backbone_and_head() -> None:
    torch.manual_seed(0)
    backbone = biofm.create_model("biovit_tiny", depth=1, patch_size=8, embed_dim=32,
                                  num_heads=2)
    obj = SimCLR(backbone, SimCLRConfig(proj_hidden_dim=16, proj_dim=8), total_steps=1)
    assert obj.encoder is backbone
    out = obj(_Views([1, 3, 5]))
    assert torch.isfinite(out["loss"]) and out["features"].shape == (3, 32)
    assert not out["features"].requires_grad and -1 <= out["pos_sim"] <= 1
    out["loss"].backward()
    for p in [*backbone.parameters(), *obj.head.parameters()]:
        if p.requires_grad:
            assert p.grad is not None
    assert any(float(p.grad.abs().sum()) > 0 for p in backbone.parameters()
               if p.grad is not None)


def test_simclr_needs_two_global_views() -> None:
    obj = SimCLR(_Flat(), SimCLRConfig(), total_steps=1)
    with pytest.raises(ConfigError, match=r"data\.views\.n_global"):
        obj(_Views([1, 2], n_global=1))
