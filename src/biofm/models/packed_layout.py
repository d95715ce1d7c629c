"""Where every token of a packed batch sits in one pad-free sequence.

BioViT runs all images of a batch as one (1, L, D) sequence, L = B + P * N: images are ordered
by channel count (stable), and each image contributes [CLS, plane 0 tokens, plane 1 tokens, ...].
Images with the same channel count are then adjacent and equally long, so attention can run one
dense SDPA call per channel count on a view of the sequence (``groups``), while every token-wise
operation (norms, projections, MLP) runs once over all L tokens. The indices are built once per
batch and shared by all blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedLayout:
    """Index maps between a batch's planes and its packed sequence.

    ``groups``: (images, tokens per image) of each run of equal channel count, in sequence order;
    ``source`` (L,): row of ``[cls; tokens.reshape(P * N, D)]`` that fills each position;
    ``cls_pos`` (B,): position of each image's CLS token (batch order);
    ``token_pos`` (P * N,): position of each plane token (batch plane order);
    ``segment`` (L,): image (batch order) of each position.
    """

    groups: tuple[tuple[int, int], ...]
    source: torch.Tensor
    cls_pos: torch.Tensor
    token_pos: torch.Tensor
    segment: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.source.numel())


def _runs(counts: list[int], n: int) -> tuple[tuple[int, int], ...]:
    """(images, 1 + C * n) for each distinct channel count C, ascending."""
    out: dict[int, int] = {}
    for c in sorted(counts):
        out[c] = out.get(c, 0) + 1
    return tuple((b, 1 + c * n) for c, b in out.items())


def build_layout(counts: torch.Tensor, n: int, device: torch.device) -> PackedLayout:
    """Layout of a batch with channel ``counts`` (B,) and ``n`` tokens per plane."""
    counts = counts.cpu()
    b, p = counts.numel(), int(counts.sum())
    lens = 1 + counts * n  # (B,) tokens per image, CLS included
    order = torch.argsort(counts, stable=True)
    start = torch.empty_like(lens)
    start[order] = torch.cumsum(lens[order], 0) - lens[order]  # (B,) first position per image
    image = torch.repeat_interleave(torch.arange(b), counts)  # (P,) image of each plane
    slot = torch.arange(p) - (torch.cumsum(counts, 0) - counts)[image]  # (P,) index in image
    token_pos = ((start[image] + 1 + slot * n)[:, None] + torch.arange(n)[None]).flatten()
    length = int(lens.sum())
    source = torch.zeros(length, dtype=torch.long)
    source[token_pos] = torch.arange(1, p * n + 1)  # 0: the CLS row
    segment = torch.repeat_interleave(order, lens[order])  # images in sequence order
    return PackedLayout(groups=_runs(counts.tolist(), n), source=source.to(device),
                        cls_pos=start.to(device), token_pos=token_pos.to(device),
                        segment=segment.to(device))
