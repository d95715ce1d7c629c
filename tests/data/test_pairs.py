"""WS-DINO pairing on a small synthetic screen: partners, determinism, fallbacks, collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from biofm.core.errors import ConfigError
from biofm.data import ManifestDataset, MultiCropConfig, MultiCropViews, collate_views
from biofm.data.pairs import WeakPairDataset
from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.io import read_manifest

VIEWS = MultiCropViews(MultiCropConfig(global_size=24, local_size=16, n_local=2))


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SyntheticScreenConfig(n_images_per_treatment=4, n_plates=1, fields_per_well=2,
                                image_size=32, experiments=DEFAULT_EXPERIMENTS[:1])
    return write_screen(tmp_path_factory.mktemp("screen"), cfg)


def _base(manifest: Path | pd.DataFrame, root: Path, **kw: Any) -> ManifestDataset:
    return ManifestDataset(manifest, VIEWS, crop_size=32, root=root, **kw)


def test_partners_share_the_label_and_are_other_fields(screen: Path) -> None:
    ds = WeakPairDataset(_base(screen, screen.parent, crops_per_field=2), "treatment")
    assert len(ds) == 32 and ds.stats()["paired_other_field"] == 32
    assert ds.base.field_bounds().tolist() == list(range(0, 33, 2))
    for i in range(len(ds)):
        j = ds.partner(i)
        assert j is not None
        (fi, _), (fj, _) = ds.locate(i), ds.locate(j)
        assert fi != fj and ds.rows[fi]["treatment"] == ds.rows[fj]["treatment"]


def test_views_come_from_item_and_partner(screen: Path) -> None:
    base = _base(screen, screen.parent)
    ds = WeakPairDataset(base, "treatment")
    item, own = ds[3], base[3]
    assert isinstance(item, dict) and isinstance(own, dict)
    j = item["meta"]["partner_index"]
    other = base[j]
    assert isinstance(other, dict) and item["meta"]["partner_id"] == other["id"]
    sources = [own, other, own, other]  # global 0, global 1, local 0, local 1
    for v, src in enumerate(sources):
        assert torch.equal(item["views"][v][0], src["views"][v][0])
    batch = collate_views([ds[i] for i in range(4)])
    assert batch.batch_size == 4 and batch.n_global == 2 and batch.n_local == 2
    assert [m["partner_index"] for m in batch.meta] == [ds.partner(i) for i in range(4)]


def test_partners_are_deterministic_per_seed_epoch_and_index(screen: Path) -> None:
    a = WeakPairDataset(_base(screen, screen.parent, seed=1), "treatment")
    b = WeakPairDataset(_base(screen, screen.parent, seed=1), "treatment")
    first = [a.partner(i) for i in range(len(a))]
    assert first == [b.partner(i) for i in reversed(range(len(b)))][::-1]
    a.set_epoch(1)
    assert a.epoch == 1 and a.base.epoch == 1
    assert first != [a.partner(i) for i in range(len(a))]
    a.set_epoch(0)
    assert first == [a.partner(i) for i in range(len(a))]


def test_fallbacks(screen: Path) -> None:
    df = read_manifest(screen)
    df.loc[0, "treatment"] = np.nan  # missing label: plain item
    df.loc[1, "treatment"] = "unique"  # only field with its label: another crop of it
    ds = WeakPairDataset(_base(df, screen.parent, crops_per_field=2), "treatment")
    assert ds.partner(0) is None and ds.partner(1) is None
    item, own = ds[0], ds.base[0]
    assert isinstance(item, dict) and isinstance(own, dict)
    assert item["meta"]["partner_index"] is None
    assert all(torch.equal(v[0], w[0]) for v, w in zip(item["views"], own["views"],
                                                       strict=True))
    assert ds.partner(2) == 3 and ds.partner(3) == 2
    stats = ds.stats()
    assert stats["unpaired_missing_label"] == 2 and stats["paired_same_field"] == 2
    single = WeakPairDataset(_base(df, screen.parent), "treatment")
    assert single.partner(1) is None and single.stats()["unpaired_alone"] == 1


def test_bad_partner_leaves_item_unpaired(screen: Path) -> None:
    df = read_manifest(screen).iloc[:2].copy()
    df["treatment"] = "same"
    df.loc[1, "paths"] = "images/missing.ome.tif"
    ds = WeakPairDataset(_base(df, screen.parent), "treatment")
    assert ds.partner(0) == 1
    item = ds[0]
    assert isinstance(item, dict) and item["meta"]["partner_index"] is None
    assert not isinstance(ds[1], dict)  # the bad sample itself stays Skipped


def test_unknown_column_is_a_config_error(screen: Path) -> None:
    with pytest.raises(ConfigError, match=r"'compound'.*treatment"):
        WeakPairDataset(_base(screen, screen.parent), "compound")


def test_field_bounds_with_irregular_crop_counts(tmp_path: Path) -> None:
    counts = [1, 5, 2, 9, 1, 3, 16, 17]
    # crops_per_field="area": a 32 x (32 * c) field gives c crops of 32 px
    df = pd.DataFrame({"id": [f"f{i}" for i in range(len(counts))],
                       "paths": [str(tmp_path / f"f{i}.tif") for i in range(len(counts))],
                       "channels": "DNA", "height": 32, "width": [32 * c for c in counts]})
    got = _base(df, tmp_path, crops_per_field="area").field_bounds()
    assert got.tolist() == [0, *np.cumsum(counts).tolist()]
