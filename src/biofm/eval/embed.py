"""Embed images with an encoder: any image size in, one row per image out.

Small images (single-cell crops) are brought up to the model's input; whole fields are tiled
and the tile embeddings averaged. Each tile is resized to the encoder's input size, so a tile
covers the field of view the encoder was trained on.
"""

from __future__ import annotations

import logging
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
        raise BadInputError(f"input size {size} is not a multiple of the patch size {patch}",
                            f"choose --input-size as a multiple of {patch}")


@torch.no_grad()
def embed_manifest(
    model: nn.Module, manifest: pd.DataFrame | str | Path, cfg: EmbedConfig,
    normalize: NormalizeConfig | None = None, root: Path | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(N, D) float32 embeddings and the manifest rows (without paths) of the usable images.

    Images that cannot be read are skipped and listed in the log.
    """
    _check_input_size(model, cfg.input_size)
    if isinstance(manifest, (str, Path)):
        from biofm.io.manifest import read_manifest

        root = root if root is not None else Path(manifest).parent
        manifest = read_manifest(manifest)
    ds = ManifestDataset(manifest, TilesAtInput(cfg.tile, cfg.input_size, cfg.max_tiles),
                         crop_size=None, cache_size=0, normalize=normalize, root=root)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers, collate_fn=_collate)
    by_id = _rows_by_id(manifest)
    device = torch.device(cfg.device)
    model = model.to(device).eval()
    embs: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for batch, bad in tqdm(loader, desc="embed", disable=not cfg.progress, unit="batch"):
        skipped += bad
        if batch is None:
            continue
        tile_emb = model(batch.to(device)).float().cpu()  # (tiles, D)
        ids = [m["id"] for m in batch.meta]
        slot = {sid: k for k, sid in enumerate(dict.fromkeys(ids))}
        order = list(slot)
        index = torch.tensor([slot[i] for i in ids])
        pooled = torch.zeros(len(order), tile_emb.shape[1]).index_add_(0, index, tile_emb)
        pooled /= torch.bincount(index, minlength=len(order))[:, None].float()
        embs.append(pooled.numpy())
        rows += [by_id[i] for i in order]
    if skipped:
        log.warning("%d images could not be embedded: %s", len(skipped), ", ".join(skipped[:20]))
    if not embs:
        raise BadInputError("no image could be embedded", "check the paths in the manifest")
    return np.concatenate(embs).astype(np.float32), pd.DataFrame(rows)


def _rows_by_id(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Manifest rows keyed by id, with ``paths`` as ``path`` first and no ``channels``."""
    from biofm.io.manifest import records

    out = {}
    for i, row in enumerate(records(df)):
        sid = str(row.get("id") or f"row{i}")
        meta = {k: v for k, v in row.items() if k not in ("paths", "channels", "id")}
        out[sid] = {"id": sid, "path": row.get("paths", ""), "channels": row.get("channels", ""),
                    **meta}
    return out


def embed_path(model: nn.Module, source: Path, out: Path, cfg: EmbedConfig,
               pattern: str = "auto") -> tuple[int, int]:
    """Embed a folder of images or a manifest CSV; write parquet to ``out``.

    Returns (number of images, embedding dimension).
    """
    from biofm.io.embeddings import write_embeddings
    from biofm.io.manifest import build_manifest, read_manifest

    if source.is_dir():
        df, root = build_manifest(source, pattern=pattern), None
    elif source.is_file():
        df, root = read_manifest(source), source.parent
    else:
        raise BadInputError(f"{source} does not exist",
                            "pass a folder of images or a manifest CSV")
    if len(df) == 0:
        raise BadInputError(f"no images found in {source}",
                            "check the folder, or pass --pattern to group channel files")
    card = getattr(model, "weights_card", {}) or {}
    norm = NormalizeConfig(**card["normalize"]) if "normalize" in card else None
    emb, meta = embed_manifest(model, df, cfg, normalize=norm, root=root)
    write_embeddings(out, emb, meta)
    return emb.shape[0], emb.shape[1]
