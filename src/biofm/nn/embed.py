"""Patch and position embeddings for channel-agnostic inputs (torch only)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PlanePatchEmbed(nn.Module):
    """One shared ``Conv2d(1 -> D)`` applied to every (image, channel) plane alone."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        # planes: (P, H, W) -> (P, 1, H, W) -> (P, D, h, w) -> (P, h*w, D)
        x = self.proj(planes.unsqueeze(1))
        return x.flatten(2).transpose(1, 2)


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (h*w, dim); any grid size, no parameters."""
    if dim % 4:
        raise ValueError(f"embedding dim {dim} must be divisible by 4 for 2-D sin-cos")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    out_y = ys.reshape(-1, 1) * omega[None]  # (h*w, dim/4)
    out_x = xs.reshape(-1, 1) * omega[None]
    emb = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
    return emb.float()


def trunc_normal_(t: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases, unit LayerNorm (ViT convention)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_in = module.in_channels * math.prod(module.kernel_size)
        nn.init.trunc_normal_(module.weight, std=math.sqrt(1.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
