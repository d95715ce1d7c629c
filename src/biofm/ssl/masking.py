"""Masking and reconstruction losses of the MAE objective: pure functions on tensors, each
tested against a naive reference (``tests/ssl/test_mae.py``)."""

from __future__ import annotations

import math

import torch

from biofm.core.errors import BadInputError


def patchify(planes: torch.Tensor, p: int) -> torch.Tensor:
    """(P, H, W) -> (P, N, p*p), N = (H/p)(W/p); token k is patch row k // w, column k % w
    (the patch embedding's order), each patch flattened row-major."""
    n_planes, h_px, w_px = planes.shape
    if h_px % p or w_px % p:
        raise BadInputError(f"planes of {h_px}x{w_px} px do not split into {p}-px patches",
                            f"crop images to a multiple of {p} px")
    h, w = h_px // p, w_px // p
    x = planes.reshape(n_planes, h, p, w, p).permute(0, 1, 3, 2, 4)  # (P, h, w, p, p)
    return x.reshape(n_planes, h * w, p * p)


def mask_budget(c: int, n: int, mask_ratio: float, channel_mask_ratio: float
                ) -> tuple[int, int]:
    """(m whole channels hidden, K tokens kept) for an image of C channels of N patches:
    m = floor(channel_mask_ratio * C) capped at C - 1; K = min(round((1 - mask_ratio) C N),
    (C - m) N), at least 1."""
    m = min(math.floor(channel_mask_ratio * c + 1e-9), c - 1)
    keep = min(round((1.0 - mask_ratio) * c * n), (c - m) * n)
    return m, max(keep, 1)


def channel_patch_mask(channel_noise: torch.Tensor, patch_noise: torch.Tensor,
                       mask_ratio: float, channel_mask_ratio: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-then-patch masking of a group of images with the same C.

    channel_noise (B, C), patch_noise (B, C*N) in [0, 1), tokens channel-major (c * N + k).
    The m channels with the lowest channel noise are hidden whole; of the other tokens the K
    with the lowest patch noise stay visible (``mask_budget``). Returns ids_keep (B, K) sorted
    ascending and mask (B, C*N), True = hidden.
    """
    b, c = channel_noise.shape
    n = patch_noise.shape[1] // c
    m, keep = mask_budget(c, n, mask_ratio, channel_mask_ratio)
    hidden_ch = torch.zeros(b, c, dtype=torch.bool, device=channel_noise.device)
    hidden_ch.scatter_(1, channel_noise.argsort(dim=1)[:, :m], True)  # (B, C)
    score = patch_noise.masked_fill(hidden_ch.repeat_interleave(n, dim=1), math.inf)
    ids_keep = score.argsort(dim=1)[:, :keep].sort(dim=1).values  # (B, K)
    mask = torch.ones(b, c * n, dtype=torch.bool, device=patch_noise.device)
    mask.scatter_(1, ids_keep, False)
    return ids_keep, mask


def normalize_patches(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., p*p) -> (x - mean) / sqrt(var + eps) per patch (population variance)."""
    var, mu = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mu) / torch.sqrt(var + eps)


def _masked_image_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) per-token values, (B, L) mask -> (B,) mean over each image's hidden tokens
    (0 for an image with none hidden)."""
    m = mask.to(per_token.dtype)
    return (per_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def mse_per_image(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pred, target (B, L, K); mask (B, L) True = hidden -> (B,) per-image MSE over hidden
    tokens (mean over K, then over the image's hidden tokens)."""
    return _masked_image_mean((pred.float() - target.float()).pow(2).mean(dim=-1), mask)


def fourier_per_image(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, p: int
                      ) -> torch.Tensor:
    """pred, target (B, L, p*p) -> (B,) per image, mean over hidden tokens of the mean over the
    p x p frequencies of | |fft2(pred)| - |fft2(target)| | (unnormalised DFT, as numpy's)."""
    b, n_tok = mask.shape
    fp = torch.fft.fft2(pred.float().reshape(b, n_tok, p, p)).abs()
    ft = torch.fft.fft2(target.float().reshape(b, n_tok, p, p)).abs()
    return _masked_image_mean((fp - ft).abs().mean(dim=(-2, -1)), mask)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scalar: mean over images of each image's MSE over its hidden tokens (pred, target
    (B, L, K); mask (B, L) True = hidden). Equal-size shards average to the global value."""
    return mse_per_image(pred, target, mask).mean()


def fourier_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, p: int
                 ) -> torch.Tensor:
    """Scalar: mean over images of ``fourier_per_image`` (pred, target (B, L, p*p))."""
    return fourier_per_image(pred, target, mask, p).mean()


# ---------------------------------------------------------------------- modules
