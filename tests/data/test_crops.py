from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from biofm.core.errors import BadSampleError
from biofm.core.sample import Sample
from biofm.data.crops import (
    PreparedField,
    find_dna_channel,
    fit_to_crop,
    nucleus_centroids,
    otsu_threshold,
)
from biofm.data.normalize import normalize_pixels, normalize_sample

DISCS = ((50, 60), (120, 170), (150, 50))


def disc_image(h: int = 200, w: int = 240, centres: tuple[tuple[int, int], ...] = DISCS,
               radius: int = 9, seed: int = 0) -> np.ndarray:
    """(H, W) uint16: dim noisy background with bright discs at ``centres``."""
    rng = np.random.default_rng(seed)
    img = rng.normal(200, 10, (h, w))
    yy, xx = np.mgrid[:h, :w]
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += 3000
    return np.clip(img, 0, 65535).astype(np.uint16)


def field_sample(n_channels: int = 3, dna: bool = True, sid: str = "f0",
                 h: int = 200, w: int = 240) -> Sample:
    """A (C, H, W) uint16 Sample; channel 0 holds DNA discs when ``dna``."""
    rng = np.random.default_rng(1)
    planes = [rng.integers(100, 4000, (h, w)).astype(np.uint16) for _ in range(n_channels)]
    names = [f"stain{i}" for i in range(n_channels)]
    if dna:
        planes[0] = disc_image(h, w)
        names[0] = "DNA"
    return Sample(np.stack(planes), names, meta={"id": sid})


def test_find_dna_channel() -> None:
    assert find_dna_channel(["ER", "DNA", "Mito"]) == 1
    assert find_dna_channel(["ER", "Mito"]) is None


def test_otsu_separates_two_modes() -> None:
    vals = np.concatenate([np.full(100, 1.0), np.full(50, 5.0)])
    thr = otsu_threshold(vals)
    assert thr is not None and 1.0 < thr <= 5.0
    assert otsu_threshold(np.ones(10)) is None


def test_centroids_of_discs() -> None:
    cents = nucleus_centroids(disc_image().astype(np.float32))
    assert len(cents) == len(DISCS)
    for cy, cx in DISCS:
        assert np.min(np.hypot(cents[:, 0] - cy, cents[:, 1] - cx)) < 1.0


def test_nucleus_crop_lands_on_a_disc() -> None:
    s = field_sample()
    f = PreparedField.build(normalize_sample(s), s.channels, 48, id="f0")
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        crop = f.crop(48, gen)
        assert crop.pixels.shape == (3, 48, 48) and crop.centre is not None
        assert crop.pixels[0, 24, 24] > 0.5  # the disc (normalised ~1) is at the centre


def test_random_tiles_without_dna() -> None:
    s = field_sample(dna=False)
    f = PreparedField.build(normalize_sample(s), s.channels, 64)
    assert len(f.centroids) == 0
    crop = f.crop(64, torch.Generator().manual_seed(0))
    assert crop.centre is None and crop.pixels.shape == (3, 64, 64)
    y0, x0 = crop.origin
    assert 0 <= y0 <= 200 - 64 and 0 <= x0 <= 240 - 64


def test_crop_clamped_at_the_edge() -> None:
    img = disc_image(100, 100, centres=((5, 95),), radius=4)
    f = PreparedField.build(normalize_pixels(img[None]), ["DNA"], 40)
    crop = f.crop(40, torch.Generator().manual_seed(0))
    assert crop.origin == (0, 60)


def test_small_image_error_names_fix_and_resize_small() -> None:
    px = np.random.default_rng(0).random((2, 40, 60)).astype(np.float32)
    with pytest.raises(BadSampleError, match="resize_small=True") as info:
        fit_to_crop(px, 64, where="cell-7")
    assert "crop size <= 40" in str(info.value) and "cell-7" in str(info.value)
    up = fit_to_crop(px, 64, resize_small=True)
    assert up.shape == (2, 64, 96) and up.dtype == np.float32


def test_nucleus_crop_on_real_field(shared_data: Path) -> None:
    path = shared_data / "cellpainting_site_bbbc022" / "Hoechst.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    dna = tifffile.imread(path)
    other = tifffile.imread(path.with_name("Mito.tif"))
    # name the stain canonically so the test does not depend on the synonym table
    s = Sample(np.stack([other, dna]), ["Mito", "DNA"], meta={"id": "bbbc022"})
    f = PreparedField.build(normalize_sample(s), s.channels, 64, id="bbbc022")
    assert 30 < len(f.centroids) < 400  # a U2OS site holds ~100 nuclei
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(f.pixels[1], 2.0)
    thr = otsu_threshold(smooth)
    gen = torch.Generator().manual_seed(0)
    on_nucleus = 0
    for _ in range(50):
        crop = f.crop(64, gen)
        assert crop.centre is not None
        cy, cx = (round(v) for v in crop.centre)
        y0, x0 = crop.origin
        assert y0 <= cy < y0 + 64 and x0 <= cx < x0 + 64
        on_nucleus += bool(smooth[cy, cx] > thr)
    assert on_nucleus >= 45
