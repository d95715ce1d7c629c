"""BioFID on real Cell Painting fields with a tiny untrained encoder: identity, monotone
degradation (blur, noise), the CLI, and refusal of mismatched reference statistics."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import biofm
from biofm.cli.main import main
from biofm.core.sample import Sample
from biofm.eval.biofid import (
    BioFIDConfig,
    Protocol,
    extract_features,
    fit_protocol,
    image_source,
    select_channels,
)
from biofm.eval.frechet import FeatureStats, fd_from_stats
from biofm.io import write_ome_tiff
from biofm.models.io import save_encoder

NF1 = "cellpainting_fields/nf1_plate2/images"


@pytest.fixture(scope="module")
def nf1(shared_data: Path) -> list[Sample]:
    src, _ = image_source(shared_data / NF1)
    return list(src())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return biofm.create_model("biovit_tiny", depth=2).eval()


def _blur(samples: list[Sample], sigma: float) -> list[Sample]:
    if sigma == 0:
        return samples
    return [
        Sample(
            ndimage.gaussian_filter(s.pixels.astype(np.float32), (0, sigma, sigma)),
            s.channels,
            meta=s.meta,
        )
        for s in samples
    ]


def _noise(samples: list[Sample], level: float, protocol: Protocol) -> list[Sample]:
    rng = np.random.default_rng(0)
    span = (np.asarray(protocol.hi) - np.asarray(protocol.lo))[:, None, None]
    return [
        Sample(
            s.pixels + (level * span * rng.standard_normal(s.pixels.shape)), s.channels, meta=s.meta
        )
        for s in samples
    ]


def test_biofid_zero_for_same_set_and_monotone_in_blur_and_noise(
    nf1: list[Sample], model: torch.nn.Module
) -> None:
    assert len(nf1) == 5 and list(nf1[0].channels) == ["DAPI", "GFP", "RFP"]
    protocol = fit_protocol(nf1, BioFIDConfig(crop=64, max_crops=128), len(nf1))
    assert protocol.channels == ("DAPI", "GFP", "RFP") and protocol.input_size == 64
    real, table = extract_features(model, nf1, protocol)
    assert real.shape == (5 * 128, 192) and set(table["crop_index"]) == set(range(128))
    ref = FeatureStats.from_features(real)
    again, _ = extract_features(model, nf1, protocol)
    assert fd_from_stats(ref, FeatureStats.from_features(again)) < 1e-6
    blur = [
        fd_from_stats(
            ref, FeatureStats.from_features(extract_features(model, _blur(nf1, s), protocol)[0])
        )
        for s in (0, 1, 2, 4)
    ]
    assert blur[0] < 1e-6
    assert all(a < b for a, b in itertools.pairwise(blur)), blur
    noise = [
        fd_from_stats(
            ref,
            FeatureStats.from_features(
                extract_features(model, _noise(nf1, lv, protocol), protocol)[0]
            ),
        )
        for lv in (0.01, 0.03, 0.1)
    ]
    assert blur[0] < noise[0] < noise[1] < noise[2], noise


def test_channel_order_follows_the_protocol(nf1: list[Sample]) -> None:
    s = nf1[0]
    flipped = Sample(s.pixels[::-1].copy(), list(s.channels)[::-1], meta=s.meta)
    np.testing.assert_array_equal(select_channels(flipped, ("DAPI", "GFP", "RFP")), s.pixels)
    # a synonym of the DNA stain is matched through the channel vocabulary
    renamed = Sample(s.pixels, ["Hoechst 33342", "GFP", "RFP"], meta=s.meta)
    np.testing.assert_array_equal(select_channels(renamed, ("DAPI", "GFP")), s.pixels[:2])
    with pytest.raises(biofm.core.errors.BadSampleError, match="--channels"):
        select_channels(s, ("DAPI", "Mito"))


def _write_fakes(nf1: list[Sample], folder: Path, sigma: float) -> Path:
    folder.mkdir(parents=True)
    for k, s in enumerate(_blur(nf1, sigma)):
        px = s.pixels[:, :512, :512].astype(np.uint16)
        write_ome_tiff(folder / f"fake{k}.ome.tif", px, list(s.channels))
    return folder


@pytest.mark.filterwarnings("ignore:FD-infinity uses subsets")
def test_cli_writes_json_and_refuses_mismatched_reference(
    nf1: list[Sample],
    model: torch.nn.Module,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enc = save_encoder(model, tmp_path / "enc")
    fakes = _write_fakes(nf1, tmp_path / "fakes", 2.0)
    real = shared_data / NF1
    out, ref = tmp_path / "fid.json", tmp_path / "ref.npz"
    rc = main(
        [
            "fid",
            str(real),
            str(fakes),
            "--model",
            str(enc),
            "--json",
            str(out),
            "--save-ref",
            str(ref),
            "--kid",
            "--fd-inf",
            "--crop",
            "64",
            "--max-crops",
            "64",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["fd"] > 0 and res["n_real"] == 5 * 64 and res["n_fake"] == 5 * 64
    assert res["preprocessing"]["channels"] == ["DAPI", "GFP", "RFP"]
    assert {"mean", "std"} <= set(res["kid"]) and "intercept" in res["fd_infinity"]
    assert ref.is_file()
    # the saved statistics stand in for REAL and give the same FD
    out2 = tmp_path / "fid2.json"
    assert main(["fid", str(ref), str(fakes), "--model", str(enc), "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["fd"] == pytest.approx(res["fd"], rel=1e-9)
    # another model is refused
    torch.manual_seed(1)
    other = save_encoder(biofm.create_model("biovit_tiny", depth=2), tmp_path / "other")
    capsys.readouterr()
    assert (
        main(
            ["fid", str(ref), str(fakes), "--model", str(other), "--json", str(tmp_path / "x.json")]
        )
        == 2
    )
    assert "model" in capsys.readouterr().err
    # another channel set is refused, naming the channels
    assert (
        main(
            [
                "fid",
                str(ref),
                str(fakes),
                "--model",
                str(enc),
                "--channels",
                "DAPI,GFP",
                "--json",
                str(tmp_path / "y.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "channels" in err and "Fix:" in err


def test_cli_scales_with_saved_statistics(
    nf1: list[Sample], model: torch.nn.Module, shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """--norm-stats replaces the percentiles fitted on REAL; statistics for other channels
    are refused with the fix."""
    from biofm.data.norm_fit import fit_sample_stats

    enc = save_encoder(model, tmp_path / "enc")
    fakes = _write_fakes(nf1, tmp_path / "fakes", 2.0)
    stats = fit_sample_stats(nf1, "reference")
    stats.save(tmp_path / "s.json")
    out = tmp_path / "fid.json"
    base = ["fid", str(shared_data / NF1), str(fakes), "--model", str(enc), "--crop", "64",
            "--max-crops", "8"]  # fmt: skip
    assert main([*base, "--json", str(out), "--norm-stats", str(tmp_path / "s.json")]) == 0
    scaling = json.loads(out.read_text())["preprocessing"]["scaling"]
    assert scaling["hi"] == [stats.reference[c][1] for c in ("DAPI", "GFP", "RFP")]
    other = fit_sample_stats([Sample(s.pixels, ["A", "B", "C"]) for s in nf1], "reference")
    other.save(tmp_path / "o.json")
    capsys.readouterr()
    assert main([*base, "--json", str(out), "--norm-stats", str(tmp_path / "o.json")]) == 2
    assert "has no normalisation statistics" in capsys.readouterr().err
