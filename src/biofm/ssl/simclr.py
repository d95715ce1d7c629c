"""SimCLR (Chen et al., ICML 2020) and the supervised contrastive loss it is a case of.

``supcon_loss`` is the "L_out" loss of Khosla et al. (NeurIPS 2020): every row of a batch of
L2-normalised embeddings is pulled towards the rows with its label and pushed from the rest of a
denominator set. NT-Xent (SimCLR) is the case where the label is the sample a view came from.

On N processes each rank embeds its own views, gathers every rank's embeddings with
``all_gather_grad`` and uses only its own rows as anchors, so the mean of the ranks' losses is
the loss of the global batch and DDP's gradient average is its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biofm.core import dist
from biofm.core.errors import ConfigError
from biofm.ssl.base import Objective, Views


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.1
    proj_hidden_dim: int = 512
    proj_dim: int = 128


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear.

    No BatchNorm (the original SimCLR head has one): its statistics would be per rank, so the
    loss would depend on how a global batch is split over processes, and it lets a sample see
    the rest of its batch.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (N, in_dim) -> (N, out_dim)


def _anchor_index(anchors: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Boolean (N,) mask or integer index tensor (or None: every row) -> (A,) long indices."""
    if anchors is None:
        return torch.arange(n, device=device)
    if anchors.dtype == torch.bool:
        return anchors.nonzero().flatten().to(device)
    return anchors.to(device=device, dtype=torch.long).flatten()


def contrast_masks(
    labels: torch.Tensor, rows: torch.Tensor, neg_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks of the anchor rows.

    labels: (N,); rows: (A,) anchor indices; neg_mask: (N, N) bool or None.
    Returns ``pos`` (A, N): same label, not the anchor itself; ``neg`` (A, N): different label
    and allowed by ``neg_mask``.
    """
    same = labels[rows][:, None] == labels[None, :]  # (A, N)
    self_mask = torch.zeros_like(same)
    self_mask[torch.arange(rows.numel(), device=rows.device), rows] = True
    pos = same & ~self_mask
    neg = ~same
    if neg_mask is not None:
        neg = neg & neg_mask[rows].to(device=neg.device, dtype=torch.bool)
    return pos, neg


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    anchors: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out).

    z: (N, D) L2-normalised embeddings; labels: (N,) int64; anchors: (N,) bool or (A,) indices
    of the rows used as anchors (None: all); neg_mask: (N, N) bool, ``neg_mask[i, j]`` allows
    j as a negative of anchor i (None: every different-label row).

    For anchor i with positives P(i) = {j != i: labels[j] == labels[i]} and denominator set
    A(i) = P(i) + {j != i: labels differ, neg_mask[i, j]}:
    ``loss_i = -1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p / T) / sum_{a in A(i)} exp(z_i.z_a / T))``.
    Anchors without positives are skipped. Returns the scalar mean over the remaining anchors
    (0, still attached to ``z``, when none remain).
    """
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    rows = _anchor_index(anchors, z.shape[0], z.device)
    pos, neg = contrast_masks(labels.to(z.device), rows, neg_mask)
    keep = pos.any(dim=1)
    rows, pos, neg = rows[keep], pos[keep], neg[keep]  # (A', N) each
    if rows.numel() == 0:
        return z.sum() * 0.0
    logits = z[rows] @ z.T / temperature  # (A', N)
    logits = logits.masked_fill(~(pos | neg), float("-inf"))  # drops the diagonal too
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (A', N)
    pos_log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_log_prob / pos.sum(dim=1)).mean()


def nt_xent_loss(
    z: torch.Tensor, n_views: int, temperature: float, anchors: torch.Tensor | None = None
) -> torch.Tensor:
    """NT-Xent (SimCLR) loss: ``supcon_loss`` with label = sample index.

    z: (V * B, D) L2-normalised, view-major (view v of sample i at row v * B + i). With V = 2
    each row has one positive (its other view) and all 2B - 2 other rows as negatives.
    """
    n = z.shape[0]
    if n_views < 1 or n % n_views:
        raise ValueError(f"{n} rows cannot be split into {n_views} views")
    labels = torch.arange(n, device=z.device) % (n // n_views)
    return supcon_loss(z, labels, temperature, anchors)


def gather_rows(
    z: torch.Tensor, codes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather every rank's rows (ranks may hold different numbers of rows).

    z: (n, D) differentiable; codes: (n, K) int64 (labels etc., no gradient).
    Returns (N, D) and (N, K) rows of all ranks in rank order, and the (n,) indices of this
    rank's own rows in them. One process: the inputs and ``arange(n)``.
    """
    n = z.shape[0]
    if not dist.is_dist():
        return z, codes, torch.arange(n, device=z.device)
    counts = dist.row_counts(z)  # (W,)
    z_all = dist.all_gather_rows(z, counts, grad=True)  # (N, D)
    c_all = dist.all_gather_rows(codes, counts)  # (N, K)
    offset = int(counts[: dist.rank()].sum())
    return z_all, c_all, offset + torch.arange(n, device=z.device)


@torch.no_grad()
def pair_stats(
    z: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
    neg_mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean cosine of positive and negative pairs of the anchor ``rows`` (NaN when there are
    none) and the fraction of anchors with at least one negative. z: (N, D) normalised."""
    pos, neg = contrast_masks(labels, rows, neg_mask)
    sim = z[rows].float() @ z.float().T  # (A, N)

    def mean(mask: torch.Tensor) -> float:
        return float(sim[mask].mean()) if bool(mask.any()) else float("nan")

    frac = float(neg.any(dim=1).float().mean()) if rows.numel() else float("nan")
    return {"pos_sim": mean(pos), "neg_sim": mean(neg), "frac_anchors_with_negatives": frac}


class ContrastiveObjective(Objective):
    """Backbone + projection head; subclasses define which views are positives."""

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int, proj_dim: int,
                 total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.backbone = backbone
        dim = int(backbone.embed_dim)  # type: ignore[arg-type]
        self.head = ProjectionHead(dim, proj_hidden_dim, proj_dim)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone


class SimCLR(ContrastiveObjective):
    """Backbone + projection head trained with NT-Xent over all global views of the batch
    (gathered over ranks): the views of one sample are positives, everything else negatives."""

    name = "simclr"

    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig, total_steps: int) -> None:
        super().__init__(backbone, cfg.proj_hidden_dim, cfg.proj_dim, total_steps)
        self.cfg = cfg

    def forward(self, views: Views) -> dict[str, Any]:
        b, v = views.batch_size, views.n_global
        if v < 2:
            raise ConfigError(f"simclr needs 2 or more global views per sample, got "
                              f"data.views.n_global={v}", "set data.views.n_global=2")
        emb = self.backbone(views.global_views)  # (V*B, D)
        z = F.normalize(self.head(emb).float(), dim=-1)  # (V*B, P)
        sample = torch.arange(b, device=z.device).repeat(v)  # (V*B,) view-major
        codes = (sample + (dist.rank() << 32))[:, None]  # unique over ranks
        z_all, c_all, own = gather_rows(z, codes)
        labels = c_all[:, 0]
        loss = supcon_loss(z_all, labels, self.cfg.temperature, anchors=own)
        stats = pair_stats(z_all.detach(), labels, own)
        return {"loss": loss, "features": emb[:b].detach(), "pos_sim": stats["pos_sim"]}
