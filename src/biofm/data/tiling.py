"""Tiles of one image for embedding: small images are upsampled to one tile, large ones are
covered by a regular grid of tiles; the caller pools the tile embeddings (mean)."""

from __future__ import annotations

import torch

from biofm.core.errors import BadInputError
from biofm.data.transforms import resize
from biofm.data.views import View


def grid_starts(n: int, tile: int) -> list[int]:
    """Starts of tiles covering [0, n) on a regular grid, the last one aligned to the edge."""
    starts = list(range(0, n - tile, tile))
    return [*starts, n - tile]


def _evenly_spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return torch.linspace(0, n - 1, k).round().long().tolist()


def tiles_for_embedding(pixels: torch.Tensor, tile: int, max_tiles: int = 64) -> torch.Tensor:
    """(C, H, W) float -> (T, C, tile, tile) tiles.

    * Short side < ``tile``: upsample (bilinear) so the short side equals ``tile``; when the
      long side then spans fewer than two tiles the image is one object (e.g. a 40x40
      imaging-flow-cytometry cell) and its centre ``tile x tile`` is the single tile.
    * Otherwise: tiles on a regular grid covering the image, the last row/column aligned to
      the edge; beyond ``max_tiles`` an evenly spaced subset (row-major order) is kept.
    """
    if pixels.ndim != 3:
        raise BadInputError(
            f"pixels have shape {tuple(pixels.shape)}; expected (C, H, W)",
            "add a channel axis to single-channel images (img[None])",
        )
    if tile < 1 or max_tiles < 1:
        raise BadInputError(f"tile={tile}, max_tiles={max_tiles}", "use tile >= 1, max_tiles >= 1")
    h, w = pixels.shape[-2:]
    if min(h, w) < tile:
        scale = tile / min(h, w)
        h, w = max(tile, round(h * scale)), max(tile, round(w * scale))
        pixels = resize(pixels.float(), (h, w))
        if max(h, w) < 2 * tile:
            y0, x0 = (h - tile) // 2, (w - tile) // 2
            return pixels[None, :, y0:y0 + tile, x0:x0 + tile].contiguous()
    boxes = [(y, x) for y in grid_starts(h, tile) for x in grid_starts(w, tile)]
    boxes = [boxes[i] for i in _evenly_spaced(len(boxes), max_tiles)]
    return torch.stack([pixels[:, y:y + tile, x:x + tile] for y, x in boxes]).contiguous()


class TileViews:
    """Callable transform for embedding whole images: one view per tile."""

    n_global = 1

    def __init__(self, tile: int, max_tiles: int = 64) -> None:
        self.tile = tile
        self.max_tiles = max_tiles

    def __call__(self, x: torch.Tensor, names: list[str], gen: torch.Generator) -> list[View]:
        tiles = tiles_for_embedding(x, self.tile, self.max_tiles)
        return [(t, list(names)) for t in tiles]
