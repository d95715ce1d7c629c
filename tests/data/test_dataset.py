from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from biofm.core.errors import ConfigError
from biofm.core.sample import Sample
from biofm.data.collate import Skipped, collate_images, collate_views
from biofm.data.dataset import ManifestDataset
from biofm.data.tiling import TileViews
from biofm.data.views import MultiCropConfig, MultiCropViews
from tests.data.test_crops import field_sample

CFG = MultiCropConfig(global_size=32, local_size=16, n_local=2)


class Loader:
    """Injectable load_fn: ids -> Samples; 'missing' raises OSError; counts calls."""

    def __init__(self) -> None:
        self.samples = {
            "a": field_sample(3, sid="a"),
            "b": field_sample(5, dna=False, sid="b", h=120, w=150),
            "blank": Sample(np.zeros((2, 100, 100), np.uint16), ["DNA", "ER"]),
            "tiny": field_sample(1, sid="tiny", h=20, w=20),
        }
        self.calls = 0

    def __call__(self, row: Mapping[str, Any]) -> Sample:
        self.calls += 1
        if row["id"] == "missing":
            raise OSError("no such file: missing.tif")
        s = self.samples[row["id"]]
        return Sample(s.pixels, list(s.channels), meta=dict(s.meta))


def manifest(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "paths": [f"{i}.tif" for i in ids], "channels": "",
                         "plate": "P1", "height": 200, "width": 240})


def make(ids: list[str], **kw: Any) -> ManifestDataset:
    kw.setdefault("crop_size", 64)
    return ManifestDataset(manifest(ids), MultiCropViews(CFG), load_fn=Loader(), **kw)


def test_items_and_caching() -> None:
    ds = make(["a", "b"], crops_per_field=3)
    assert len(ds) == 6 and ds.locate(4) == (1, 1)
    out = ds[0]
    assert isinstance(out, dict) and out["id"] == "a" and out["n_global"] == 2
    assert out["meta"]["plate"] == "P1" and out["meta"]["nucleus_centred"]
    assert "paths" not in out["meta"]
    assert len(out["views"]) == 4 and out["views"][0][0].shape[-2:] == (32, 32)
    for i in range(6):
        ds[i]
    assert isinstance(ds.load_fn, Loader) and ds.load_fn.calls == 2  # one load per field
    assert ds[3]["meta"]["nucleus_centred"] is False  # "b" has no DNA channel


def test_area_crops_and_arg_checks() -> None:
    ds = make(["a", "b"], crops_per_field="area")
    assert len(ds) == 2 * (200 * 240 // 64**2)
    with pytest.raises(ConfigError, match="height"):
        ManifestDataset(manifest(["a"]).drop(columns=["height"]), crop_size=8,
                        crops_per_field="area", load_fn=Loader())
    with pytest.raises(ConfigError):
        make(["a"], crops_per_field=0)


def test_epoch_determinism() -> None:
    ds1, ds2 = make(["a", "b"], seed=3), make(["a", "b"], seed=3)
    v1, v2 = ds1[1]["views"], ds2[1]["views"]
    assert all(torch.equal(x, y) and n == m for (x, n), (y, m) in zip(v1, v2, strict=True))
    ds2.set_epoch(1)
    assert ds2.epoch == 1
    v3 = ds2[1]["views"]
    assert not all(x.shape == y.shape and torch.equal(x, y)
                   for (x, _), (y, _) in zip(v1, v3, strict=True))


def test_bad_samples_are_skipped_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ds = make(["a", "missing", "blank", "tiny"], crops_per_field=2)
    with caplog.at_level(logging.WARNING, logger="biofm.data.dataset"):
        items = [ds[i] for i in range(len(ds))]
    skipped = [it for it in items if isinstance(it, Skipped)]
    assert [s.id for s in skipped] == ["missing"] * 2 + ["blank"] * 2 + ["tiny"] * 2
    assert "OSError" in skipped[0].reason and "no signal" in skipped[2].reason
    assert "resize_small=True" in skipped[4].reason
    assert sum("missing" in r.getMessage() for r in caplog.records) == 1
    batch = collate_views(items)
    assert batch.batch_size == 2 and batch.n_skipped == 6
    assert batch.skipped_ids.count("blank") == 2


def test_resize_small_makes_tiny_usable() -> None:
    ds = make(["tiny"], resize_small=True)
    out = ds[0]
    assert isinstance(out, dict) and out["views"][0][0].shape == (1, 32, 32)


def test_whole_fields_with_tiles_for_embedding() -> None:
    ds = ManifestDataset(manifest(["a", "b"]), TileViews(100), crop_size=None, load_fn=Loader())
    pb = collate_images([ds[0], ds[1]])
    assert pb is not None and pb.num_images == 6 + 4  # 200x240 -> 2x3 tiles, 120x150 -> 2x2
    assert [m["id"] for m in pb.meta].count("a") == 6


def test_dataloader_workers_follow_set_epoch() -> None:
    ds = make(["a", "b"], crops_per_field=2)
    dl = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_views,
                    persistent_workers=True, multiprocessing_context="fork")
    e0 = next(iter(dl))
    ds.set_epoch(1)
    e1 = next(iter(dl))
    ds.set_epoch(0)
    e0b = next(iter(dl))
    assert e0.global_views is not None and e0b.global_views is not None
    assert torch.equal(e0.global_views.planes, e0b.global_views.planes)
    assert e1.global_views is not None and not (
        e1.global_views.planes.shape == e0.global_views.planes.shape
        and torch.equal(e1.global_views.planes, e0.global_views.planes))


def test_real_field_through_default_loader(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "cellpainting_site_bbbc022"
    names = ["Hoechst", "ERSyto", "ERSytoBleed", "Ph_golgi", "Mito"]
    if not all((folder / f"{n}.tif").exists() for n in names):
        pytest.skip(f"{folder} is incomplete")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 64)
    df = pd.DataFrame({
        "id": ["bbbc022/site", "broken"],
        "paths": [";".join(str(folder / f"{n}.tif") for n in names), str(corrupt)],
        "channels": [";".join(names), "DNA"],
        "source": "bbbc022",
        "pixel_size_um": None,
    })
    ds = ManifestDataset(df, MultiCropViews(CFG), crop_size=96, crops_per_field=4)
    items = [ds[i] for i in range(len(ds))]
    good = [it for it in items if isinstance(it, dict)]
    assert len(good) == 4 and all(it["meta"]["nucleus_centred"] for it in good)
    assert [it.id for it in items if isinstance(it, Skipped)] == ["broken"] * 4
    batch = collate_views(items)
    assert batch.batch_size == 4 and batch.n_skipped == 4
    assert batch.global_views is not None and int(batch.global_views.counts.max()) <= 5


def test_dataset_pickles_for_spawned_workers() -> None:
    import pickle

    ds = ManifestDataset(manifest(["a"]), MultiCropViews(CFG), crop_size=32)
    ds.set_epoch(3)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.epoch == 3 and len(clone) == 1


def test_multi_scale_crops_draw_their_side_from_crop_sizes(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, rng.integers(0, 4000, (2, 96, 96), dtype=np.uint16))
    df = pd.DataFrame({"id": ["f"], "paths": [str(path)], "channels": ["DAPI;actin"]})
    ds = ManifestDataset(df, crop_size=64, crops_per_field=30, crop_sizes=(32, 48, 64))
    sizes = {ds[i]["views"][0][0].shape[-1] for i in range(30)}  # type: ignore[index]
    assert sizes == {32, 48, 64}
    assert {ds[i]["meta"]["crop_size"] for i in range(30)} == sizes  # type: ignore[index]
    with pytest.raises(ConfigError, match="crop_sizes"):
        ManifestDataset(df, crop_size=64, crop_sizes=(32, 96))
