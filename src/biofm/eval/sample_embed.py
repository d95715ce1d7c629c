"""Embed in-memory ``Sample``s (crops, tiles) with an encoder, as its training saw them.

Each sample is normalised per channel (the model card's settings), resized to the model's
input size (bilinear, antialiased when shrinking), its channel names mapped to the model's
channel vocabulary, and packed with the others of its batch whatever their channel counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.data.normalize import NormalizeConfig, normalize_sample


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


@torch.no_grad()
def embed_samples(
    model: nn.Module, samples: Sequence[Sample], *, input_size: int | None = None,
    batch_size: int = 64, device: str = "cpu", vocab: ChannelVocab = DEFAULT_VOCAB,
) -> np.ndarray:  # fmt: skip
    """(N, D) float32 embeddings of ``samples``."""
    if not samples:
        raise BadInputError("no samples to embed", "pass at least one Sample")
    size = input_size or model_input_size(model)
    card = _card(model)
    norm = NormalizeConfig(**card["normalize"]) if "normalize" in card else NormalizeConfig()
    model = model.to(device).eval()
    out = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [_resize(torch.from_numpy(normalize_sample(s, norm)), size) for s in chunk]
        ids = [vocab.ids(s.channels) for s in chunk]
        batch = PackedBatch.from_images(images, ids).to(torch.device(device))
        out.append(model(batch).float().cpu().numpy())
    emb = np.concatenate(out)
    if not np.isfinite(emb).all():
        raise BadInputError("the encoder returned non-finite embeddings",
                            "check the model weights and the input images")  # fmt: skip
    return emb.astype(np.float32)
