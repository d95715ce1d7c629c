"""The synthetic screen: determinism, layout, manifest round trip, measurable treatment effects."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from biofm.core.errors import ConfigError
from biofm.data.synthetic import (
    DEFAULT_EXPERIMENTS,
    TREATMENTS,
    SyntheticImage,
    SyntheticScreenConfig,
    generate_screen,
    write_screen,
)

SMALL = SyntheticScreenConfig(seed=1, n_images_per_treatment=4, fields_per_well=2)
MANIFEST_COLUMNS = ["id", "paths", "channels", "source", "pixel_size_um", "experiment", "plate",
                    "well", "site", "treatment", "label"]


@pytest.fixture(scope="module")
def small() -> list[SyntheticImage]:
    return generate_screen(SMALL)


@pytest.fixture(scope="module")
def screen() -> list[SyntheticImage]:
    """Enough images per treatment to measure effects across images."""
    return generate_screen(SyntheticScreenConfig(seed=7, n_images_per_treatment=12))


def _select(images: list[SyntheticImage], experiment: str, treatment: str) -> list[np.ndarray]:
    return [im.pixels for im in images
            if im.meta["experiment"] == experiment and im.meta["treatment"] == treatment]


def _nucleus_mask(dna: np.ndarray) -> np.ndarray:
    d = ndimage.gaussian_filter(dna.astype(float), 1.0)
    bg = np.median(d)
    return d > bg + 0.2 * (np.percentile(d, 99.5) - bg)


def _mean_nuclear_area(images: list[np.ndarray]) -> float:
    """Mean area of the nuclei (not touching the border) over all images."""
    areas = []
    for px in images:
        lab, _ = ndimage.label(_nucleus_mask(px[0]))
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        lab[np.isin(lab, border)] = 0
        sizes = np.bincount(lab.ravel())[1:]
        areas.extend(sizes[sizes >= 5].tolist())
    return float(np.mean(areas))


# ------------------------------------------------------------------------------ generation
def test_default_config_has_three_experiments_with_different_channel_sets() -> None:
    cfg = SyntheticScreenConfig()
    assert cfg.image_size == 64
    assert len(cfg.experiments) >= 3
    assert len({e.channels for e in cfg.experiments}) == len(cfg.experiments)
    assert [len(e.channels) for e in DEFAULT_EXPERIMENTS] == [2, 3, 5]
    assert cfg.treatments == TREATMENTS and "control" in TREATMENTS
    assert cfg.wells_per_treatment == 3


def test_deterministic_by_seed(small: list[SyntheticImage]) -> None:
    again = generate_screen(SMALL)
    assert [im.meta for im in again] == [im.meta for im in small]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(again, small, strict=True))
    other = generate_screen(SyntheticScreenConfig(seed=2, n_images_per_treatment=4,
                                                  fields_per_well=2))
    assert not all(np.array_equal(a.pixels, b.pixels) for a, b in zip(other, small, strict=True))


def test_shapes_dtypes_and_channels(small: list[SyntheticImage]) -> None:
    specs = {e.name: e for e in SMALL.experiments}
    for im in small:
        spec = specs[im.meta["experiment"]]
        assert im.pixels.shape == (len(spec.channels), 64, 64)
        assert im.pixels.dtype == np.uint16
        assert int(im.pixels.max()) <= 4095  # 12-bit camera
        assert im.channels == list(spec.channels)
        assert all(float(c.std()) > 0 for c in im.pixels)  # no empty planes
    pixels, names, meta = small[0]  # unpacks like a (pixels, names, meta) tuple
    assert pixels is small[0].pixels and names == small[0].channels and isinstance(meta, dict)
    odd = generate_screen(SyntheticScreenConfig(image_size=48, n_images_per_treatment=1))
    assert all(im.pixels.shape[1:] == (48, 48) for im in odd)


def test_metadata_and_balanced_labels(small: list[SyntheticImage]) -> None:
    metas = [im.meta for im in small]
    assert all(set(m) == {"id", "experiment", "plate", "well", "site", "treatment"}
               for m in metas)
    assert len({m["id"] for m in metas}) == len(metas)
    counts = Counter((m["experiment"], m["treatment"]) for m in metas)
    assert set(counts.values()) == {4} and len(counts) == 3 * len(TREATMENTS)
    plates = Counter((m["experiment"], m["plate"], m["treatment"]) for m in metas)
    assert set(plates.values()) == {2}  # split evenly over 2 plates
    assert all(re.fullmatch(r"[A-P]\d\d", m["well"]) for m in metas)
    assert {m["site"] for m in metas} == {1, 2}
    per_well: dict[tuple[str, str], set[str]] = {}
    for m in metas:
        per_well.setdefault((m["plate"], m["well"]), set()).add(m["treatment"])
    assert all(len(t) == 1 for t in per_well.values())  # one treatment per well


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        SyntheticScreenConfig(treatments=("control", "bogus"))
    with pytest.raises(ConfigError):
        SyntheticScreenConfig(n_images_per_treatment=0)
    with pytest.raises(ConfigError):
        SyntheticScreenConfig(n_images_per_treatment=10_000, fields_per_well=1)


# ------------------------------------------------------------------------------ manifest
def test_manifest_round_trip(tmp_path: Path, small: list[SyntheticImage]) -> None:
    manifest = write_screen(tmp_path / "screen", SMALL)
    assert manifest == tmp_path / "screen" / "manifest.csv"
    assert not [p for p in manifest.parent.iterdir() if p.name.endswith(".tmp")]
    df = pd.read_csv(manifest)
    assert list(df.columns) == MANIFEST_COLUMNS
    assert len(df) == len(small)
    assert (df["label"] == df["treatment"]).all()
    assert (df["source"] == "synthetic:" + df["experiment"]).all()
    by_id = {im.meta["id"]: im for im in small}
    for row in df.itertuples():
        rel = Path(str(row.paths))
        assert not rel.is_absolute() and (manifest.parent / rel).is_file()
        assert rel.parts[:3] == ("images", row.experiment, row.plate)
        im = by_id[str(row.id)]
        assert str(row.channels).split(";") == im.channels
        with tifffile.TiffFile(manifest.parent / rel) as tif:
            assert np.array_equal(tif.asarray(), im.pixels)
            pixels = ET.fromstring(tif.ome_metadata or "").find(".//{*}Pixels")
        assert pixels is not None and float(pixels.get("PhysicalSizeX", 0)) == 0.65
        assert [c.get("Name") for c in pixels.findall("{*}Channel")] == im.channels


# ------------------------------------------------------------------------------ treatment effects
def test_nuclear_swelling_enlarges_nuclei(screen: list[SyntheticImage]) -> None:
    ratios = {}
    for exp in ("expA", "expB", "expC"):
        ratios[exp] = (_mean_nuclear_area(_select(screen, exp, "nuclear_swelling"))
                       / _mean_nuclear_area(_select(screen, exp, "control")))
    assert min(ratios.values()) > 1.0, ratios
    assert float(np.mean(list(ratios.values()))) > 1.2, ratios


def test_nuclear_area_measure_sees_no_effect_without_treatment() -> None:
    cfg = SyntheticScreenConfig(seed=7, n_images_per_treatment=24, effect_strength=0.0,
                                experiments=DEFAULT_EXPERIMENTS[:1],
                                treatments=("control", "nuclear_swelling"))
    images = generate_screen(cfg)
    ratio = (_mean_nuclear_area(_select(images, "expA", "nuclear_swelling"))
             / _mean_nuclear_area(_select(images, "expA", "control")))
    assert 0.85 < ratio < 1.15


def test_intensity_moves_gfp_into_the_nucleus(screen: list[SyntheticImage]) -> None:
    def nuclear_fraction(px: np.ndarray) -> float:
        nuc = _nucleus_mask(px[0])
        gfp = px[1].astype(float) - np.median(px[1])
        cyto = (gfp > 0.2 * np.percentile(gfp, 99)) & ~ndimage.binary_dilation(nuc)
        return float(gfp[nuc].mean() / gfp[cyto].mean())

    control = np.median([nuclear_fraction(p) for p in _select(screen, "expB", "control")])
    treated = np.median([nuclear_fraction(p) for p in _select(screen, "expB", "intensity")])
    assert treated > 2.0 * control


def test_texture_coarsens_mitochondria(screen: list[SyntheticImage]) -> None:
    def fine_detail(plane: np.ndarray) -> float:
        p = np.clip(plane.astype(float) - np.median(plane), 0, None)
        return float((ndimage.gaussian_laplace(p, 0.7) ** 2).sum()
                     / (ndimage.gaussian_filter(p, 1.5) ** 2).sum())

    for exp, mito in (("expB", 2), ("expC", 4)):
        control = np.median([fine_detail(p[mito]) for p in _select(screen, exp, "control")])
        treated = np.median([fine_detail(p[mito]) for p in _select(screen, exp, "texture")])
        assert treated < 0.8 * control, (exp, control, treated)
