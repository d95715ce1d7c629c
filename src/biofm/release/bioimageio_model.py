"""``BioimageioEncoder``: a biofm encoder behind the dense (B, C, H, W) interface of bioimage.io.

A bioimage.io package fixes its channels (names and order), so the wrapper holds their
channel ids and turns a dense, already normalised batch into the ``PackedBatch`` the encoder
takes: every image has the same channels. Its state dict is the encoder's, each key prefixed
with ``encoder.``; the channel ids are a non-persistent buffer (they come from the kwargs).

Tracing (``torch.jit.trace``) records Python ints taken from tensors as constants; the
encoders' packed path groups images by channel count in Python, which would freeze the batch
size. Under tracing, BioViT with grouped attention therefore runs the same computation written
densely, with every size read from the input's shape, so the traced module takes any batch
size. Other encoders run
the packed path (their traced form is then valid for the traced batch size only;
:func:`traced_batch_dynamic` says which).

:func:`preprocess` is the reference of the package's preprocessing and :func:`test_image`
the raw test tile of a package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.models.biovit import BioViT
from biofm.models.registry import create_model

SCALE_RANGE_EPS = 1e-6  # bioimage.io's default eps of scale_range


class BioimageioEncoder(nn.Module):
    """(B, C, H, W) float32, normalised, channels as in ``channel_ids`` -> (B, D) embeddings."""

    channel_ids: torch.Tensor

    def __init__(self, model_name: str, model_kwargs: Mapping[str, Any] | None = None,
                 channel_ids: Sequence[int] = ()) -> None:
        super().__init__()
        if len(channel_ids) == 0:
            raise BadInputError("BioimageioEncoder got no channel ids",
                                "pass one channel id per input channel")
        self.encoder = create_model(model_name, **dict(model_kwargs or {}))
        self.embed_dim = int(self.encoder.embed_dim)  # type: ignore[arg-type]
        self.num_channels = len(channel_ids)
        self.register_buffer("channel_ids", torch.tensor([int(i) for i in channel_ids],
                                                         dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tracing = torch.jit.is_tracing()
        if not tracing and (x.ndim != 4 or x.shape[1] != self.num_channels):
            raise BadInputError(
                f"input of shape {tuple(x.shape)}; expected (B, {self.num_channels}, H, W)",
                "pass a batch with the package's channels in the package's order")
        x = x.float()
        if tracing and dense_supported(self.encoder):
            return self._dense(x)
        return self._packed(x)

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's own forward on a PackedBatch of the images."""
        b, c = x.shape[0], x.shape[1]
        planes = x.reshape(-1, x.shape[2], x.shape[3])  # (B*C, H, W)
        ids = self.channel_ids.repeat(b)  # (B*C,)
        counts = torch.full((b,), c, dtype=torch.long, device=x.device)  # (B,)
        out: torch.Tensor = self.encoder(PackedBatch(planes, ids, counts))
        return out

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """BioViT's grouped forward for one channel count, sizes from the input's shape."""
        enc: Any = self.encoder
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        tok = enc.patch_embed(x.reshape(-1, h, w))  # (B*C, N, D)
        n, d = tok.shape[1], tok.shape[2]
        p = enc.cfg.patch_size
        tok = tok + enc.pos_gain * enc._pos(h // p, w // p, tok.device).to(tok.dtype)
        if enc.channel_embed is not None:
            ids = (self.channel_ids if enc.uses_channel_ids
                   else torch.arange(c, device=x.device))
            tok = tok.reshape(-1, c, n, d) + enc.channel_embed(ids)[None, :, None, :]
        seq = tok.reshape(-1, c * n, d)  # (B, C*N, D)
        cls = enc.cls_token.to(seq.dtype).expand(seq.shape[0], -1, -1)  # (B, 1, D)
        seq = torch.cat([cls, seq], dim=1)  # (B, 1 + C*N, D)
        for blk in enc.blocks:
            seq = blk(seq)
        out: torch.Tensor = enc._pool(enc.norm(seq))  # (B, D)
        return out


def dense_supported(encoder: nn.Module) -> bool:
    """Whether tracing ``encoder`` inside the wrapper keeps the batch size free."""
    return type(encoder) is BioViT and encoder.cfg.attn_impl == "grouped"


def traced_batch_dynamic(wrapper: BioimageioEncoder) -> bool:
    """Whether a trace of ``wrapper`` is valid for every batch size."""
    return dense_supported(wrapper.encoder)


# ---------------------------------------------------------------------- package inputs
def preprocess(raw: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
    """(C, H, W) raw -> float32 as the package's preprocessing computes it: per channel
    ``(x - p_low) / (p_high - p_low + eps)`` (linear percentiles over y, x), then clipped."""
    x = raw.astype(np.float32)
    if "fixed_lo" in norm:
        gain, offset = fixed_gain_offset(norm)
        y = x * gain[:, None, None] + offset[:, None, None]
        clip = norm.get("clip", (-0.5, 3.0))
        return np.clip(y, clip[0], clip[1]).astype(np.float32)
    lo, hi = np.percentile(x, [norm.get("low", 1.0), norm.get("high", 99.8)], axis=(1, 2))
    y = (x - lo[:, None, None]) / (hi - lo + SCALE_RANGE_EPS)[:, None, None]
    clip = norm.get("clip", (-0.5, 3.0))
    return np.clip(y, clip[0], clip[1]).astype(np.float32)


def fixed_gain_offset(norm: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gain and offset of fixed (lo, hi) statistics; a flat channel maps to 0."""
    lo = np.asarray(norm["fixed_lo"], np.float64)
    hi = np.asarray(norm["fixed_hi"], np.float64)
    span = hi - lo
    gain = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)
    return gain.astype(np.float32), (-lo * gain).astype(np.float32)


def test_image(sample: np.ndarray | None, c: int, size: int) -> np.ndarray:
    """The raw test tile (C, size, size) float32: ``sample`` center-cropped, or synthetic."""
    if sample is None:
        return _synthetic(c, size)
    img = np.asarray(sample)
    if img.ndim != 3:
        raise BadInputError(f"sample has shape {img.shape}; expected (C, H, W), 2-D per "
                            "channel", "pass one (C, H, W) image (take one Z plane / time point)")
    if img.shape[0] != c:
        raise BadInputError(f"sample has {img.shape[0]} channels but channels names {c}",
                            "pass a sample with exactly the package's channels, in order")
    if not np.issubdtype(img.dtype, np.number) or not np.isfinite(img).all():
        raise BadInputError("sample contains NaN or infinite values (or is not numeric)",
                            "pass a raw image with finite pixel values")
    h, w = img.shape[1:]
    if h < size or w < size:
        raise BadInputError(f"sample is {h}x{w} px, smaller than the {size} px tile",
                            f"pass a sample of at least {size}x{size} px or a smaller input_size")
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top:top + size, left:left + size].astype(np.float32)


def _synthetic(c: int, size: int) -> np.ndarray:
    from biofm.data.synthetic import ExperimentSpec, SyntheticScreenConfig, generate_screen

    others = ("er", "rna", "agp", "mito", "actin", "gfp")
    comps = ("dna", *(others[i % len(others)] for i in range(max(c - 1, 1))))
    spec = ExperimentSpec("export", tuple(f"ch{i}" for i in range(len(comps))), comps)
    cfg = SyntheticScreenConfig(image_size=max(size, 32), n_images_per_treatment=1,
                                n_plates=1, fields_per_well=1, treatments=("control",),
                                experiments=(spec,))
    return generate_screen(cfg)[0].pixels[:c, :size, :size].astype(np.float32)
