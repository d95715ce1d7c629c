"""Reductions over segments of rows: the building block of pad-free per-image pooling.

``index`` (P,) names the segment (image) of each row of ``values`` (P, ...); segments are
0..num_segments-1. All functions are vectorised (``index_add`` / ``scatter_reduce``): no padding
and no Python loop over images. Rows should be contiguous along dim 0 for speed (on CPU,
index ops on a channels-last 4-D tensor are many times slower; reduce a permuted view).
"""

from __future__ import annotations

import torch


def _expand(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.view(-1, *([1] * (like.ndim - 1))).expand_as(like)


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum of the rows of each segment -> (num_segments, ...)."""
    return values.new_zeros((num_segments, *values.shape[1:])).index_add(0, index, values)


def segment_mean(values: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of each segment; ``counts`` (S,) rows per segment (all >= 1)."""
    total = segment_sum(values, index, counts.numel())
    return total / counts.to(total.dtype).view(-1, *([1] * (values.ndim - 1)))


def segment_max(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Element-wise maximum over the rows of each segment (every segment non-empty)."""
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.scatter_reduce(0, _expand(index, values), values, "amax", include_self=False)


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` over the rows of each segment, element-wise in the other dims.

    Each segment's maximum (a constant within the segment, so the result is unchanged) is
    subtracted first to keep ``exp`` finite.
    """
    with torch.no_grad():
        top = segment_max(scores, index, num_segments)
    ex = torch.exp(scores - top[index])
    return ex / segment_sum(ex, index, num_segments)[index]
