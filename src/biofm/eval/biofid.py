"""BioFID features: a frozen biofm encoder under one fixed, recorded preprocessing protocol.

The protocol (:class:`Protocol`) is fitted once on the *reference* (real) set and applied
unchanged to every set compared with it:

* a fixed, ordered channel set (by name; synonyms such as Hoechst/DAPI match through the
  channel vocabulary), identical channel ids for real and fake images;
* a fixed per-channel affine scaling ``(x - lo) / (hi - lo)`` with ``lo``/``hi`` the
  0.1/99.9 percentiles of the reference set (never a per-image min-max, which would erase
  intensity errors), then clipping and optional quantisation to ``levels`` steps (rounded);
* crops of a fixed size on a regular grid (``biofm.data.tiling``), each fed to the encoder at
  a fixed input size (``biofm.eval.embed.TilesAtInput``); every crop is one feature vector
  (the encoder's global embedding).

The protocol and the encoder's weight hash make the metadata ``fingerprint`` stored with
reference statistics (:mod:`biofm.eval.frechet_stats`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from biofm._version import __version__
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError, BadSampleError, ConfigError
from biofm.core.sample import Sample
from biofm.data.collate import collate_images
from biofm.eval.embed import TilesAtInput, _check_input_size
from biofm.eval.frechet_stats import fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """Fixed preprocessing of BioFID; ``lo``/``hi`` come from the reference set."""

    channels: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    crop: int = 64
    input_size: int = 64
    max_crops: int = 64
    low: float = 0.1
    high: float = 99.9
    clip: tuple[float, float] = (-0.5, 3.0)
    levels: int | None = None

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.lo) == len(self.hi) or not self.channels:
            raise ConfigError(
                f"{len(self.channels)} channels with {len(self.lo)} lo and "
                f"{len(self.hi)} hi values",
                "give one lo/hi per channel",
            )
        if self.crop < 1 or self.input_size < 1 or self.max_crops < 1:
            raise ConfigError(
                f"crop={self.crop}, input_size={self.input_size}, max_crops={self.max_crops}",
                "use positive sizes",
            )
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"levels={self.levels}", "use e.g. 256 (8-bit) or None")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (the ``preprocessing`` of the metadata)."""
        return {
            "channels": list(self.channels),
            "scaling": {
                "lo": list(self.lo),
                "hi": list(self.hi),
                "low": self.low,
                "high": self.high,
                "clip": list(self.clip),
                "levels": self.levels,
            },
            "crop": self.crop,
            "input_size": self.input_size,
            "max_crops": self.max_crops,
            "feature": "global embedding",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        s = d["scaling"]
        return cls(
            tuple(d["channels"]),
            tuple(s["lo"]),
            tuple(s["hi"]),
            int(d["crop"]),
            int(d["input_size"]),
            int(d["max_crops"]),
            float(s["low"]),
            float(s["high"]),
            (float(s["clip"][0]), float(s["clip"][1])),
            s["levels"],
        )

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        """(C, H, W) selected channels -> float32, scaled, clipped (and quantised)."""
        lo = np.asarray(self.lo, np.float64)[:, None, None]
        span = np.asarray(self.hi, np.float64)[:, None, None] - lo
        span = np.where(span > 0, span, 1.0)
        x = (pixels.astype(np.float64) - lo) / span
        if self.levels is not None:
            steps = self.levels - 1
            return (np.round(np.clip(x, 0.0, 1.0) * steps) / steps).astype(np.float32)
        return np.clip(x, self.clip[0], self.clip[1]).astype(np.float32)


@dataclass(frozen=True)
class BioFIDConfig:
    """Choices made before the reference set is seen (``None``: decided from the data)."""

    channels: tuple[str, ...] | None = None  # None: the first reference image's channels
    crop: int = 64
    input_size: int | None = None  # None: the crop size (no resampling)
    max_crops: int = 64  # per image, evenly spaced over the grid
    low: float = 0.1
    high: float = 99.9
    clip: tuple[float, float] = (-0.5, 3.0)
    levels: int | None = None
    pixels_per_channel: int = 4_000_000  # reference pixels used for the percentiles
    batch_size: int = 64  # crops per forward pass
    device: str = "cpu"


def select_channels(sample: Sample, channels: tuple[str, ...]) -> np.ndarray:
    """``sample.pixels`` restricted to ``channels`` in that order (exact names first, then
    the canonical stain of the channel vocabulary)."""
    names = list(sample.channels)
    if names == list(channels):
        return sample.pixels
    where = str(sample.meta.get("id") or sample.meta.get("path") or "") or None
    idx = []
    for want in channels:
        hits = [i for i, n in enumerate(names) if n == want]
        if not hits and DEFAULT_VOCAB.id(want) != 0:
            hits = [i for i, n in enumerate(names) if DEFAULT_VOCAB.id(n) == DEFAULT_VOCAB.id(want)]
        if len(hits) != 1:
            raise BadSampleError(
                f"image channels {names} hold {len(hits)} matches for {want!r} of the BioFID "
                f"channel set {list(channels)}",
                "give real and fake images the same named channels (manifest 'channels' "
                "column), or choose the channel set with --channels",
                where,
            )
        idx.append(hits[0])
    return sample.pixels[idx]


def fit_protocol(
    samples: Iterable[Sample], cfg: BioFIDConfig, n_images: int | None = None
) -> Protocol:
    """Fit the per-channel percentiles on the reference ``samples`` (a strided subsample of
    about ``pixels_per_channel / n_images`` pixels of each image)."""
    per_image = max(1024, cfg.pixels_per_channel // max(n_images or 1, 1))
    channels = cfg.channels
    chunks: list[np.ndarray] = []
    for s in samples:
        if channels is None:
            channels = tuple(s.channels)
        px = select_channels(s, channels)
        c, h, w = px.shape
        stride = max(1, int(np.sqrt(h * w / per_image)))
        chunks.append(px[:, ::stride, ::stride].reshape(c, -1).astype(np.float64))
    if not chunks or channels is None:
        raise BadInputError(
            "the reference set holds no readable image", "check the REAL folder or manifest"
        )
    lo, hi = np.percentile(np.concatenate(chunks, axis=1), [cfg.low, cfg.high], axis=1)
    size = cfg.crop if cfg.input_size is None else cfg.input_size
    return Protocol(
        tuple(channels),
        tuple(float(v) for v in lo),
        tuple(float(v) for v in hi),
        cfg.crop,
        size,
        cfg.max_crops,
        cfg.low,
        cfg.high,
        cfg.clip,
        cfg.levels,
    )


def with_overrides(protocol: Protocol, **kw: Any) -> Protocol:
    """``protocol`` with the given fields replaced (``None`` values ignored)."""
    return replace(protocol, **{k: v for k, v in kw.items() if v is not None})


def model_sha256(model: nn.Module) -> str:
    """sha256 of the encoder's weights (names and raw bytes, in sorted order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def metadata(model_sha: str, protocol: Protocol, **extra: Any) -> dict[str, Any]:
    """Metadata of statistics made with this model and protocol, with its fingerprint."""
    pre = protocol.to_dict()
    return {
        "model_sha256": model_sha,
        "preprocessing": pre,
        "fingerprint": fingerprint(model_sha, pre),
        "biofm_version": __version__,
        **extra,
    }


@torch.no_grad()
def extract_features(
    model: nn.Module,
    samples: Iterable[Sample],
    protocol: Protocol,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, D) float32 features, one per crop, and a table of each crop's image metadata
    (``image_id``, ``crop_index`` and the image's manifest columns)."""
    _check_input_size(model, protocol.input_size)
    tiles = TilesAtInput(protocol.crop, protocol.input_size, protocol.max_crops)
    dev = torch.device(device)
    model = model.to(dev).eval()
    gen = torch.Generator().manual_seed(0)
    names = list(protocol.channels)
    feats: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        batch = collate_images(pending)
        if batch is not None:
            feats.append(model(batch.to(dev)).float().cpu().numpy())
            rows.extend(batch.meta)
        pending.clear()

    for s in samples:
        x = torch.from_numpy(protocol.scale(select_channels(s, protocol.channels)))
        sid = str(s.meta.get("id") or s.meta.get("path") or f"image{len(rows)}")
        meta = {k: v for k, v in s.meta.items() if k not in ("id", "path")}
        pending.append({"views": tiles(x, names, gen), "id": sid, "meta": meta})
        if sum(len(it["views"]) for it in pending) >= batch_size:
            flush()
    if pending:
        flush()
    if not feats:
        raise BadInputError("no image could be embedded", "check the image folder or manifest")
    table = pd.DataFrame(
        [{"image_id": r.pop("id"), "crop_index": r.pop("view"), **r} for r in rows]
    )
    return np.concatenate(feats).astype(np.float32), table


def image_source(source: Path, pattern: str = "auto") -> tuple[Callable[[], Iterator[Sample]], int]:
    """A re-iterable reader of the images of a folder or manifest CSV, and their count.
    Unreadable images are skipped with a warning."""
    from biofm.io.manifest import build_manifest, read_manifest
    from biofm.io.samples import iter_samples

    if source.is_dir():
        df, root = build_manifest(source, pattern=pattern), None
    elif source.is_file() and source.suffix.lower() == ".csv":
        df, root = read_manifest(source), source.parent
    else:
        raise BadInputError(
            f"{source} is neither a folder of images nor a manifest CSV",
            "pass a folder, a manifest .csv, or (for REAL) a statistics .npz",
        )
    if len(df) == 0:
        raise BadInputError(
            f"no images found in {source}",
            "check the folder, or pass --pattern to group channel files",
        )
    return (lambda: iter_samples(df, root, on_error="skip")), len(df)
