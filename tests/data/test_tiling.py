from __future__ import annotations

import pytest
import torch

from biofm.core.errors import BadInputError
from biofm.data.tiling import TileViews, grid_starts, tiles_for_embedding


def test_small_cell_is_upsampled_to_one_tile() -> None:
    t = tiles_for_embedding(torch.rand(3, 40, 40), 224)
    assert t.shape == (1, 3, 224, 224)
    t = tiles_for_embedding(torch.rand(2, 40, 56), 224)  # aspect: short side, centre crop
    assert t.shape == (1, 2, 224, 224)


def test_large_field_is_tiled_on_a_grid() -> None:
    x = torch.rand(5, 1080, 1080)
    t = tiles_for_embedding(x, 224)
    assert t.shape == (25, 5, 224, 224)  # ceil(1080 / 224) = 5 per side
    assert torch.equal(t[0], x[:, :224, :224])
    assert torch.equal(t[-1], x[:, -224:, -224:])  # last tile aligned to the edge
    assert grid_starts(1080, 224) == [0, 224, 448, 672, 856]


def test_max_tiles_takes_an_evenly_spaced_subset() -> None:
    x = torch.rand(1, 1080, 1080)
    t = tiles_for_embedding(x, 64, max_tiles=10)
    assert t.shape == (10, 1, 64, 64)
    assert torch.equal(t[0], x[:, :64, :64]) and torch.equal(t[-1], x[:, -64:, -64:])


def test_exact_size_and_views() -> None:
    x = torch.rand(2, 64, 64)
    assert torch.equal(tiles_for_embedding(x, 64)[0], x)
    views = TileViews(32)(torch.rand(3, 64, 96), ["a", "b", "c"], torch.Generator())
    assert len(views) == 6 and all(v.shape == (3, 32, 32) for v, _ in views)
    with pytest.raises(BadInputError):
        tiles_for_embedding(torch.rand(64, 64), 32)
