"""Representation health metrics logged during training (collapse shows here first).

* ``feature_std``: mean over dimensions of the standard deviation of L2-normalised features
  across the batch; a collapsed encoder gives 0, features spread uniformly on the sphere give
  about ``1 / sqrt(D)``.
* ``effective_rank``: RankMe (Garrido et al., ICML 2023): ``exp`` of the entropy of the
  normalised singular values of the (N, D) feature matrix; between 1 (collapse to a line) and
  ``min(N, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_std(features: torch.Tensor) -> float:
    """features: (N, D). Mean per-dimension std of the L2-normalised rows."""
    if features.shape[0] < 2:
        return float("nan")
    z = F.normalize(features.detach().float(), dim=-1)
    return float(z.std(dim=0).mean())


def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    """features: (N, D). RankMe effective rank, ``exp(-sum p_k log p_k)`` with
    ``p_k = s_k / sum(s)`` over the singular values ``s`` of the features."""
    if features.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(features.detach().float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))
