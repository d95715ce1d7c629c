from __future__ import annotations

import numpy as np
import pytest

from biofm.core.errors import BadSampleError, ConfigError
from biofm.core.sample import Sample
from biofm.data.normalize import NormalizeConfig, normalize_pixels, normalize_sample


def test_normalize_shape_dtype_range() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 65535, (3, 1080, 1080)).astype(np.uint16)
    out = normalize_pixels(px)
    assert out.shape == px.shape and out.dtype == np.float32
    assert out.min() >= -0.5 and out.max() <= 3.0
    # robust range maps the bulk of each channel to about [0, 1]
    assert abs(np.percentile(out[0], 1)) < 0.02 and abs(np.percentile(out[0], 99.8) - 1) < 0.02


def test_constant_channel_becomes_zeros() -> None:
    px = np.stack([np.full((32, 32), 7, np.uint16), np.arange(1024, dtype=np.uint16)
                   .reshape(32, 32)])
    out = normalize_pixels(px)
    assert np.all(out[0] == 0) and out[1].max() > 0.9


def test_sparse_channel_is_not_flattened() -> None:
    px = np.zeros((1, 100, 100), np.uint16)
    px[0, 50, 50] = 1000  # a single bright spot: both percentiles are 0
    out = normalize_pixels(px)
    assert out[0, 50, 50] == pytest.approx(1.0)


def test_constant_image_error_names_fix() -> None:
    s = Sample(np.full((2, 16, 16), 3, np.uint16), ["a", "b"], meta={"id": "blank-1"})
    with pytest.raises(BadSampleError, match="no signal") as info:
        normalize_sample(s)
    assert "blank-1" in str(info.value) and "exclude" in str(info.value)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        NormalizeConfig(low=99, high=1)
