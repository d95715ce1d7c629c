"""Baselines: handcrafted features, pixel PCA and the untrained architecture, on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

import biofm
from biofm.core.errors import BadInputError
from biofm.eval.baselines import (
    CHANNEL_FEATURES,
    PixelPCA,
    channel_features,
    feature_names,
    handcrafted_features,
    untrained_like,
)


def test_features_have_fixed_length_whatever_the_channel_count() -> None:
    rng = np.random.default_rng(0)
    one = handcrafted_features(rng.integers(0, 4000, (1, 64, 80)).astype(np.uint16))
    five = handcrafted_features(rng.integers(0, 4000, (5, 64, 80)).astype(np.uint16))
    assert one.shape == five.shape == (2 * len(CHANNEL_FEATURES),) == (len(feature_names()),)
    assert np.isfinite(one).all() and np.isfinite(five).all()


def test_glcm_and_shape_features_see_what_they_should() -> None:
    names = list(CHANNEL_FEATURES)
    rng = np.random.default_rng(1)
    smooth = np.tile(np.linspace(0, 1, 64), (64, 1))
    noisy = rng.random((64, 64))
    fs, fn = channel_features(smooth), channel_features(noisy)
    assert fn[names.index("glcm_contrast")] > 10 * fs[names.index("glcm_contrast")]
    assert fs[names.index("glcm_correlation")] > 0.9 > fn[names.index("glcm_correlation")]
    blobs = np.zeros((64, 64))
    for cy, cx in [(10, 10), (10, 50), (50, 30)]:
        blobs[cy - 4 : cy + 4, cx - 4 : cx + 4] = 1.0
    fb = channel_features(blobs)
    assert np.expm1(fb[names.index("n_objects")]) == pytest.approx(3)
    assert np.expm1(fb[names.index("area_mean")]) == pytest.approx(64)
    assert fb[names.index("fill_ratio")] == pytest.approx(1.0)


def test_focus_and_texture_features_fall_with_blur_of_a_real_field(shared_data: Path) -> None:
    """Laplacian variance, gradient and co-occurrence contrast fall as a real BBBC006 field is
    blurred more and more (the focus measures a defocus task relies on)."""
    image = tifffile.imread(sorted((shared_data / "focus_bbbc006" / "training" / "0")
                                   .glob("*.tif"))[0]).astype(np.float64)  # fmt: skip
    keys = [CHANNEL_FEATURES.index(k) for k in ("laplacian_var", "gradient", "glcm_contrast")]
    rows = [channel_features(ndimage.gaussian_filter(image, s))[keys] for s in (0, 1, 2, 4)]
    for column in np.array(rows).T:
        assert (np.diff(column) < 0).all(), column


def test_pixel_pca_is_channel_agnostic_and_fitted_first() -> None:
    rng = np.random.default_rng(2)
    images = [rng.random((c, 40 + c, 50)) for c in (1, 2, 3, 5)]
    with pytest.raises(BadInputError, match="fit"):
        PixelPCA(8).transform(images)
    pca = PixelPCA(n_components=4, size=16).fit(images)
    out = pca.transform(images)
    assert out.shape == (4, 8) and np.isfinite(out).all()
    # the order of an image's channels does not matter
    np.testing.assert_allclose(pca.transform_one(images[3][::-1]), out[3], atol=1e-9)


def test_untrained_like_has_same_architecture_and_new_weights() -> None:
    model = biofm.create_model("biovit_tiny", depth=1, embed_dim=32, num_heads=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    fresh = untrained_like(model, seed=0)
    assert type(fresh) is type(model) and fresh.model_kwargs == model.model_kwargs
    assert [n for n, _ in fresh.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert not torch.equal(next(fresh.parameters()), next(model.parameters()))
    again = untrained_like(model, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters(),
                                                  strict=True))  # fmt: skip


def test_bad_images_are_refused() -> None:
    with pytest.raises(BadInputError, match=r"\(C, H, W\)"):
        handcrafted_features(np.zeros((32, 32)))
    with pytest.raises(BadInputError, match="at least 8x8"):
        handcrafted_features(np.zeros((1, 4, 4)))
