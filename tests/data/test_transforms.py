from __future__ import annotations

import pytest
import torch

from biofm.core.errors import ConfigError
from biofm.data.rng import generator_for
from biofm.data.transforms import (
    channel_dropout,
    channel_shuffle,
    gamma_jitter,
    intensity_jitter,
    random_dihedral,
    random_resized_crop,
)
from biofm.data.views import MultiCropConfig, MultiCropViews, SingleView


def labelled(c: int, h: int = 48, w: int = 48) -> tuple[torch.Tensor, list[str]]:
    """Channel i is the constant i + 1, named 'c{i}'."""
    x = torch.arange(1, c + 1, dtype=torch.float32)[:, None, None].expand(c, h, w).clone()
    return x, [f"c{i}" for i in range(c)]


def test_generator_for_is_deterministic_and_keyed() -> None:
    a = torch.rand(4, generator=generator_for(0, 1, 2))
    assert torch.equal(a, torch.rand(4, generator=generator_for(0, 1, 2)))
    assert not torch.equal(a, torch.rand(4, generator=generator_for(0, 2, 2)))


def test_geometric_shapes() -> None:
    x = torch.rand(5, 40, 60)
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop(x, 32, g).shape == (5, 32, 32)
    assert random_resized_crop(x, 96, g, scale=(0.1, 0.2)).shape == (5, 96, 96)
    assert random_dihedral(torch.rand(3, 16, 16), g).shape == (3, 16, 16)


def test_dihedral_is_a_permutation_of_pixels() -> None:
    x = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    y = random_dihedral(x, torch.Generator().manual_seed(3))
    assert torch.equal(y.flatten().sort().values, x.flatten())


def test_intensity_is_independent_per_channel() -> None:
    x, _ = labelled(4)
    g = torch.Generator().manual_seed(0)
    y = intensity_jitter(torch.ones_like(x), g, scale=(0.5, 2.0), shift=0.0)
    per_channel = y[:, 0, 0]
    assert torch.equal(y, per_channel[:, None, None].expand_as(y))  # one factor per plane
    assert per_channel.unique().numel() == 4
    z = gamma_jitter(torch.tensor([[[-0.2, 0.0, 0.5]]]), g, gamma=(2.0, 2.0))
    assert torch.allclose(z, torch.tensor([[[-0.2, 0.0, 0.25]]]))


def test_channel_shuffle_keeps_name_plane_pairing() -> None:
    x, names = labelled(6)
    y, ny = channel_shuffle(x, names, torch.Generator().manual_seed(1))
    assert sorted(ny) == names and ny != names
    for plane, name in zip(y, ny, strict=True):
        assert torch.all(plane == int(name[1:]) + 1)


def test_channel_dropout_keeps_at_least_one() -> None:
    x, names = labelled(3)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        y, ny = channel_dropout(x, names, 0.95, g)
        assert 1 <= y.shape[0] == len(ny) <= 3
        for plane, name in zip(y, ny, strict=True):
            assert torch.all(plane == int(name[1:]) + 1)


def test_multicrop_views_shapes_and_pairing() -> None:
    x, names = labelled(5, 96, 96)
    cfg = MultiCropConfig(p_channel_drop=0.5, p_intensity=0.0, p_gamma=0.0)
    views = MultiCropViews(cfg)(x, names, generator_for(0, 0, 0))
    assert len(views) == 6
    assert [tuple(v.shape[-2:]) for v, _ in views] == [(64, 64)] * 2 + [(32, 32)] * 4
    for v, vn in views:
        assert v.dtype == torch.float32 and v.shape[0] == len(vn) >= 1
        for plane, name in zip(v, vn, strict=True):  # resize of a constant plane is constant
            assert torch.allclose(plane, torch.full_like(plane, int(name[1:]) + 1))
    assert len({tuple(vn) for _, vn in views}) > 1  # dropout/shuffle drawn per view


def test_multicrop_is_reproducible() -> None:
    x = torch.rand(3, 80, 80)
    t = MultiCropViews()
    a = t(x, ["a", "b", "c"], generator_for(7, 1, 5))
    b = t(x, ["a", "b", "c"], generator_for(7, 1, 5))
    c = t(x, ["a", "b", "c"], generator_for(7, 2, 5))
    assert all(torch.equal(u, v) and nu == nv for (u, nu), (v, nv) in zip(a, b, strict=True))
    assert not all(u.shape == v.shape and torch.equal(u, v)
                   for (u, _), (v, _) in zip(a, c, strict=True))


def test_single_view_and_config_checks() -> None:
    x = torch.rand(2, 50, 50)
    [(v, n)] = SingleView(32)(x, ["a", "b"], torch.Generator())
    assert v.shape == (2, 32, 32) and n == ["a", "b"]
    with pytest.raises(ConfigError):
        MultiCropConfig(global_scale=(0.5, 1.5))
    with pytest.raises(ConfigError):
        MultiCropConfig(p_channel_drop=2.0)
