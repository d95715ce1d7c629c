"""Embed images with an encoder: any image size in, one row per image out.

Small images (single-cell crops) are brought up to the model's input; whole fields are tiled
and the tile embeddings averaged. Each tile is resized to the encoder's input size, so a tile
covers the field of view the encoder was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.data.collate import Item, collate_images, split_skipped
from biofm.data.dataset import ManifestDataset
from biofm.data.norm_stats import NormStats
from biofm.data.normalize import NormalizeConfig
from biofm.data.tiling import tiles_for_embedding
from biofm.data.transforms import resize
from biofm.data.views import View

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    tile: int = 96  # field of view of one tile, in image pixels (the card's training view)
    input_size: int = 64  # pixels the encoder sees per tile
    max_tiles: int = 64
    batch_size: int = 64  # images per forward pass (their tiles all go together)
    num_workers: int = 0
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def for_model(cls, model: nn.Module, **overrides: Any) -> EmbedConfig:
        """Defaults from the encoder's card (its training crop and view sizes)."""
        card = getattr(model, "weights_card", {}) or {}
        base: dict[str, Any] = {}
        if "tile" in card:
            base["tile"] = int(card["tile"])
        if "input_size" in card:
            base["input_size"] = int(card["input_size"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


class TilesAtInput:
    """Transform: tiles of ``tile`` px, each resized to ``input_size`` px."""

    n_global = 1

    def __init__(self, tile: int, input_size: int, max_tiles: int) -> None:
        self.tile, self.input_size, self.max_tiles = tile, input_size, max_tiles

    def __call__(self, x: torch.Tensor, names: list[str], gen: torch.Generator) -> list[View]:
        tiles = tiles_for_embedding(x, self.tile, self.max_tiles)
        if self.input_size != self.tile:
            tiles = torch.stack([resize(t, (self.input_size, self.input_size)) for t in tiles])
        return [(t, list(names)) for t in tiles]


def _collate(items: list[Item]) -> tuple[PackedBatch | None, list[str]]:
    _, skipped, _ = split_skipped(items)
    return collate_images(items), skipped


def _check_input_size(model: nn.Module, size: int) -> None:
    patch = getattr(getattr(model, "cfg", None), "patch_size", 1)
    if size % patch:
        raise BadInputError(
            f"input size {size} is not a multiple of the patch size {patch}",
            f"choose --input-size as a multiple of {patch}",
        )


def resolve_block_spec(model: nn.Module, spec: str | Sequence[int] | None) -> list[int] | None:
    """Block indices to export: None (none), ``"all"``, ``"3,6,11"`` or a list (negative
    indices count from the end). Errors name the model's block range."""
    if spec is None:
        return None
    encoder: Any = model
    if not hasattr(model, "resolve_blocks") or not hasattr(model, "forward_intermediates"):
        raise BadInputError(
            f"{type(model).__name__} has no per-block features",
            "use an encoder built with biofm.create_model, or drop --blocks",
        )
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("", "all"):
            return list(encoder.resolve_blocks(None))
        try:
            spec = [int(v) for v in text.split(",") if v.strip()]
        except ValueError as err:
            raise BadInputError(
                f"--blocks {spec!r} is not a list of block indices",
                "pass --blocks alone (all blocks) or e.g. --blocks 3,6,11",
            ) from err
    return sorted(set(encoder.resolve_blocks(list(spec))))


@dataclass
class EmbeddedBatch:
    """One batch of images: ``ids`` (in manifest order), pooled ``emb`` (n, D), per-block
    pooled features ``blocks`` {block: (n, D_k)}, and the ids that could not be read."""

    ids: list[str]
    emb: np.ndarray
    blocks: dict[int, np.ndarray]
    skipped: list[str]


def _pool(tile_feats: torch.Tensor, index: torch.Tensor, n: int) -> np.ndarray:
    """Mean of each image's tile features: (tiles, D) -> (n, D) float32."""
    feats = tile_feats.float().cpu().numpy()
    if len(index) == n:  # one tile per image (crops): nothing to average
        return np.ascontiguousarray(feats[np.argsort(index.numpy(), kind="stable")],
                                    dtype=np.float32)  # fmt: skip
    pooled = np.zeros((n, feats.shape[1]), np.float64)
    np.add.at(pooled, index.numpy(), feats)
    pooled /= np.bincount(index.numpy(), minlength=n)[:, None]
    return pooled.astype(np.float32)


@torch.no_grad()
def iter_embed(
    model: nn.Module,
    manifest: pd.DataFrame,
    cfg: EmbedConfig,
    normalize: NormalizeConfig | None = None,
    root: Path | None = None,
    blocks: Sequence[int] | None = None,
    norm_stats: NormStats | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed ``manifest`` batch by batch (tiles pooled per image), with a progress bar.

    With ``blocks``, each batch also carries the encoder's pooled per-block features
    (``forward_intermediates``), tile-pooled the same way as the embedding. ``norm_stats``:
    scale each image by the statistics of its group instead of its own percentiles.
    """
    _check_input_size(model, cfg.input_size)
    ds = ManifestDataset(
        manifest,
        TilesAtInput(cfg.tile, cfg.input_size, cfg.max_tiles),
        crop_size=None,
        cache_size=0,
        normalize=normalize,
        root=root,
        norm_stats=norm_stats,
    )
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        collate_fn=_collate,
    )
    device = torch.device(cfg.device)
    model = model.to(device).eval()
    wanted = list(blocks) if blocks else []
    for batch, bad in tqdm(loader, desc="embed", disable=not cfg.progress, unit="batch"):
        if batch is None:
            yield EmbeddedBatch([], np.zeros((0, 0), np.float32), {}, list(bad))
            continue
        batch = batch.to(device)
        ids = [str(m["id"]) for m in batch.meta]
        slot = {sid: k for k, sid in enumerate(dict.fromkeys(ids))}
        index = torch.tensor([slot[i] for i in ids])
        emb = _pool(model(batch), index, len(slot))
        per_block: dict[int, np.ndarray] = {}
        if wanted:
            inter = model.forward_intermediates(batch, wanted)  # type: ignore[operator]
            per_block = {int(k): _pool(v, index, len(slot)) for k, v in inter.items()}
        yield EmbeddedBatch(list(slot), emb, per_block, list(bad))


def ensure_ids(df: pd.DataFrame) -> pd.DataFrame:
    """The manifest with a text ``id`` column (``row<i>`` where missing), index reset."""
    out = df.reset_index(drop=True)
    given = out["id"] if "id" in out.columns else pd.Series([""] * len(out))
    ids = [f"row{i}" if pd.isna(v) or str(v) == "" else str(v) for i, v in enumerate(given)]
    return out.assign(id=ids)


def embed_manifest(
    model: nn.Module,
    manifest: pd.DataFrame | str | Path,
    cfg: EmbedConfig,
    normalize: NormalizeConfig | None = None,
    root: Path | None = None,
    norm_stats: NormStats | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, D) float32 embeddings and the manifest rows (without paths) of the usable images.

    Images that cannot be read are skipped and listed in the log. Everything is kept in
    memory; ``biofm.eval.embed_run.embed_path`` writes large sets in resumable chunks.
    """
    if isinstance(manifest, (str, Path)):
        from biofm.io.manifest import read_manifest

        root = root if root is not None else Path(manifest).parent
        manifest = read_manifest(manifest)
    manifest = ensure_ids(manifest)
    by_id = rows_by_id(manifest)
    embs: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for out in iter_embed(model, manifest, cfg, normalize, root, norm_stats=norm_stats):
        skipped += out.skipped
        if out.ids:
            embs.append(out.emb)
            rows += [by_id[i] for i in out.ids]
    if skipped:
        log.warning("%d images could not be embedded: %s", len(skipped), ", ".join(skipped[:20]))
    if not embs:
        raise BadInputError("no image could be embedded", "check the paths in the manifest")
    return np.concatenate(embs).astype(np.float32), pd.DataFrame(rows)


def rows_by_id(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Manifest rows keyed by id, with ``paths`` as ``path`` first and no ``channels``."""
    from biofm.io.manifest import records

    out = {}
    for i, row in enumerate(records(df)):
        sid = str(row.get("id") or f"row{i}")
        meta = {k: v for k, v in row.items() if k not in ("paths", "channels", "id")}
        out[sid] = {
            "id": sid,
            "path": row.get("paths", ""),
            "channels": row.get("channels", ""),
            **meta,
        }
    return out
