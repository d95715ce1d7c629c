"""Channel-agnostic augmentations of a (C, H, W) float tensor with its channel names.

Nothing assumes RGB: every intensity change is drawn independently per channel, and channel
dropout/shuffling move planes together with their names. All randomness comes from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from biofm.data.rng import coin, log_uniform_vec, randint, uniform, uniform_vec


def random_dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of the 8 flips/rotations by 90 degrees, uniformly (microscopy has no 'up')."""
    k = randint(gen, 4)
    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    if coin(gen, 0.5):
        x = torch.flip(x, dims=(-1,))
    return x


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (C, H, W) to ``size``, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return y[0]


def resized_crop_box(
    h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
    gen: torch.Generator, attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) covering a random fraction ``scale`` of the area with a
    log-uniform aspect ratio in ``ratio``; the whole image when no draw fits."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * uniform(gen, scale[0], scale[1])
        aspect = math.exp(uniform(gen, log_r[0], log_r[1]))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return randint(gen, h - ch + 1), randint(gen, w - cw + 1), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def random_resized_crop(
    x: torch.Tensor, size: int, gen: torch.Generator,
    scale: tuple[float, float] = (0.4, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """(C, H, W) -> (C, size, size): a random box (area fraction ``scale``, aspect ``ratio``)
    resized bilinearly."""
    top, left, ch, cw = resized_crop_box(x.shape[-2], x.shape[-1], scale, ratio, gen)
    return resize(x[:, top:top + ch, left:left + cw], (size, size))


def intensity_jitter(
    x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.8, 1.25),
    shift: float = 0.1,
) -> torch.Tensor:
    """x * a_c + b_c with a_c log-uniform in ``scale`` and b_c uniform in [-shift, shift],
    drawn independently per channel."""
    c = x.shape[0]
    a = log_uniform_vec(gen, scale[0], scale[1], c).to(x)
    b = uniform_vec(gen, -shift, shift, c).to(x)
    return x * a[:, None, None] + b[:, None, None]


def gamma_jitter(
    x: torch.Tensor, gen: torch.Generator, gamma: tuple[float, float] = (0.7, 1.4)
) -> torch.Tensor:
    """x_c ** g_c on the positive part (g_c log-uniform in ``gamma``, one per channel);
    values <= 0 are kept."""
    g = log_uniform_vec(gen, gamma[0], gamma[1], x.shape[0]).to(x)[:, None, None]
    pos = x.clamp(min=0)
    return torch.where(x > 0, pos.pow(g), x)


def channel_dropout(
    x: torch.Tensor, names: list[str], p: float, gen: torch.Generator
) -> tuple[torch.Tensor, list[str]]:
    """Drop each channel with probability p, keeping at least one (a random one if all drop)."""
    c = x.shape[0]
    if p <= 0:
        return x, list(names)
    keep = torch.rand(c, generator=gen) >= p
    if not bool(keep.any()):
        keep[randint(gen, c)] = True
    idx = keep.nonzero().flatten()
    return x[idx], [names[i] for i in idx.tolist()]


def channel_shuffle(
    x: torch.Tensor, names: list[str], gen: torch.Generator
) -> tuple[torch.Tensor, list[str]]:
    """Permute the channels randomly, each name travelling with its plane."""
    perm = torch.randperm(x.shape[0], generator=gen)
    return x[perm], [names[i] for i in perm.tolist()]
