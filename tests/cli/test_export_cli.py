"""``biofm export release|hf|torchhub`` end to end through ``biofm.cli.main``, and the errors
a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import biofm
from biofm.cli.main import main
from biofm.models.io import save_encoder

SMALL = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.fixture()
def encoder_dir(tmp_path: Path) -> Path:
    model = biofm.create_model("biovit_tiny", **SMALL)
    return save_encoder(model, tmp_path / "enc", extra={"objective": "simclr",
                                                        "trained_steps": 7, "input_size": 64})


def test_release_then_hub_and_torchhub_exports(encoder_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,source\na,dsb2018\nb,bbbc022\n")
    rel = tmp_path / "rel"
    assert main(["export", "release", str(encoder_dir), "--name", "cli-tiny", "--out", str(rel),
                 "--manifest", str(manifest)]) == 0
    card = json.loads((rel / "config.json").read_text())
    assert card["name"] == "cli-tiny" and card["training"]["steps"] == 7
    assert [s["source"] for s in card["training"]["sources"]] == ["bbbc022", "dsb2018"]
    assert card["biofm_version"] == biofm.__version__

    assert main(["export", "hf", str(rel), "--out", str(tmp_path / "hf")]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    assert json.loads((tmp_path / "hf/config.json").read_text())["weights_sha256"] == card[
        "weights_sha256"]

    capsys.readouterr()
    assert main(["export", "torchhub", str(rel), "--out", str(tmp_path / "th")]) == 0
    printed = json.loads(capsys.readouterr().out)
    weights = Path(printed["weights"])
    assert weights.name == f"cli-tiny-{card['weights_sha256'][:8]}.safetensors"
    assert f"v{biofm.__version__}" in printed["usage"] and weights.is_file()


def test_export_errors_name_the_fix(encoder_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "hf", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "Fix:" in capsys.readouterr().err
    (tmp_path / "t.json").write_text(json.dumps({"results": []}))
    assert main(["export", "release", str(encoder_dir), "--name", "x", "--out",
                 str(tmp_path / "r"), "--tasks", str(tmp_path / "t.json")]) == 2
    assert "method" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bioimageio_package_from_the_command_line(encoder_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    import zipfile

    import numpy as np
    import tifffile

    pkg = tmp_path / "pkg.zip"
    assert main(["export", "bioimageio", str(encoder_dir), "--out", str(pkg), "--channels",
                 "DNA,Mito", "--input-size", "32", "--authors", "A. Lab"]) == 0
    names = zipfile.ZipFile(pkg).namelist()
    assert "rdf.yaml" in names or "bioimageio.yaml" in names
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "three.tif", rng.integers(0, 4000, (3, 40, 40), dtype=np.uint16))
    assert main(["export", "bioimageio", str(encoder_dir), "--out", str(tmp_path / "b.zip"),
                 "--channels", "DNA,Mito", "--input-size", "32", "--sample",
                 str(tmp_path / "three.tif")]) == 2
    assert not (tmp_path / "b.zip").exists()


def test_embed_a_folder_with_the_shipped_model(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The README's one command: a folder of images, the shipped model, no download."""
    import numpy as np
    import pandas as pd
    import tifffile

    from biofm.io.embeddings import read_embeddings

    rng = np.random.default_rng(0)
    folder = tmp_path / "my_images"
    folder.mkdir()
    for i, c in enumerate((1, 2, 3)):
        tifffile.imwrite(folder / f"img{i}.tif", rng.integers(0, 4000, (c, 80, 90),
                                                               dtype=np.uint16),
                         photometric="minisblack")
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(folder), "--model", "biofm-vit-tiny", "--out", str(out),
                 "--no-progress"]) == 0
    emb, meta = read_embeddings(out)
    assert emb.shape == (3, 192) and np.isfinite(emb).all()
    assert isinstance(meta, pd.DataFrame) and len(meta) == 3
    # --model is optional: the recommended shipped model, also biofm.load_model()'s default
    import biofm

    out2 = tmp_path / "emb2.parquet"
    assert main(["embed", str(folder), "--out", str(out2), "--no-progress"]) == 0
    np.testing.assert_allclose(read_embeddings(out2)[0], emb, atol=1e-6)
    assert biofm.load_model().weights_card["name"] == "biofm-vit-tiny"
    assert "normalisation: scope source" in capsys.readouterr().out
