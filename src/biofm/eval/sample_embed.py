"""Embed in-memory ``Sample``s (crops, tiles) with an encoder, as its training saw them.

Each sample is normalised per channel (the model card's settings), resized to the model's
input size (bilinear, antialiased when shrinking), its channel names mapped to the model's
channel vocabulary, and packed with the others of its batch whatever their channel counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.data.norm_stats import NormStats
from biofm.data.normalize import NormalizeConfig, normalize_sample


def sample_group(sample: Sample, stats: NormStats | None) -> Any:
    """The normalisation group of an in-memory sample: its meta at ``stats.group_by``."""
    if stats is None or not stats.group_by:
        return None
    return sample.meta.get(stats.group_by)


def _card(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "weights_card", {}) or {})


def model_input_size(model: nn.Module, default: int = 96) -> int:
    """The input size the model was trained at (from its card), else ``default``."""
    return int(_card(model).get("input_size") or default)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    shrink = min(x.shape[-2:]) > size
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrink)[0]  # fmt: skip


def _batches(model: nn.Module, samples: Sequence[Sample], size: int, batch_size: int,
             device: str, vocab: ChannelVocab, norm_stats: NormStats | None,
             ) -> Iterator[PackedBatch]:  # fmt: skip
    card = _card(model)
    norm = NormalizeConfig(**card["normalize"]) if "normalize" in card else NormalizeConfig()
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [_resize(torch.from_numpy(normalize_sample(s, norm, norm_stats,
                                                            sample_group(s, norm_stats))), size)
                  for s in chunk]  # fmt: skip
        ids = [vocab.ids(s.channels) for s in chunk]
        yield PackedBatch.from_images(images, ids).to(torch.device(device))


def _finite(emb: np.ndarray) -> np.ndarray:
    if not np.isfinite(emb).all():
        raise BadInputError("the encoder returned non-finite embeddings",
                            "check the model weights and the input images")  # fmt: skip
    return emb.astype(np.float32)


@torch.no_grad()
def embed_samples(
    model: nn.Module, samples: Sequence[Sample], *, input_size: int | None = None,
    batch_size: int = 64, device: str = "cpu", vocab: ChannelVocab = DEFAULT_VOCAB,
    norm_stats: NormStats | None = None,
) -> np.ndarray:  # fmt: skip
    """(N, D) float32 embeddings of ``samples``.

    ``norm_stats``: scale each sample by the statistics of its group (``sample.meta`` at the
    statistics' ``group_by`` key) instead of by its own percentiles."""
    if not samples:
        raise BadInputError("no samples to embed", "pass at least one Sample")
    model = model.to(device).eval()
    out = [model(b).float().cpu().numpy() for b in _batches(
        model, samples, input_size or model_input_size(model), batch_size, device, vocab,
        norm_stats)]  # fmt: skip
    return _finite(np.concatenate(out))


@torch.no_grad()
def embed_samples_blocks(
    model: nn.Module, samples: Sequence[Sample], blocks: Sequence[int] | None = None, *,
    input_size: int | None = None, batch_size: int = 64, device: str = "cpu",
    vocab: ChannelVocab = DEFAULT_VOCAB, norm_stats: NormStats | None = None,
) -> dict[int, np.ndarray]:  # fmt: skip
    """{block: (N, D_k)} pooled per-block features (``forward_intermediates``) of ``samples``,
    every block by default."""
    if not samples:
        raise BadInputError("no samples to embed", "pass at least one Sample")
    enc: Any = model.to(device).eval()
    wanted = list(enc.resolve_blocks(list(blocks) if blocks is not None else None))
    parts: dict[int, list[np.ndarray]] = {int(k): [] for k in wanted}
    for b in _batches(model, samples, input_size or model_input_size(model), batch_size,
                      device, vocab, norm_stats):  # fmt: skip
        for k, v in enc.forward_intermediates(b, wanted).items():
            parts[int(k)].append(v.float().cpu().numpy())
    return {k: _finite(np.concatenate(v)) for k, v in parts.items()}
