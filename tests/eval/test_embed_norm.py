"""``biofm embed`` normalisation: statistics fitted on the input by default (per plate),
saved beside the output and reusable; per-image scaling on request; bad statistics refused."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import biofm
from biofm.cli import embed as embed_cli
from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.data.norm_fit import fit_sample_stats
from biofm.data.norm_stats import NormStats
from biofm.eval.embed import EmbedConfig
from biofm.eval.embed_run import NormSpec, embed_path, norm_path, work_dir
from biofm.io.embeddings import read_embeddings
from biofm.models.io import save_encoder
from tests.data.test_norm_stats import _cell, _manifest

CFG = EmbedConfig(tile=64, input_size=32, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plates")
    path = folder / "manifest.csv"
    _manifest(folder).to_csv(path, index=False)
    return path


class Interrupt(RuntimeError):
    pass


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return biofm.create_model("biovit_tiny", depth=1, embed_dim=32, num_heads=2,
                              patch_size=8).eval()  # fmt: skip


def test_default_fits_per_plate_and_saves_statistics(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    s = embed_path(_model(), manifest, out, CFG)
    assert s.norm_scope == "source" and s.norm_file == norm_path(out)
    stats = NormStats.load(norm_path(out))
    assert stats.group_by == "plate" and set(stats.groups) == {"p1", "p2"}
    emb, _ = read_embeddings(out)
    again = embed_path(_model(), manifest, tmp_path / "f.parquet", CFG,
                       norm=NormSpec(stats_file=norm_path(out)))  # fmt: skip
    np.testing.assert_allclose(read_embeddings(again.out)[0], emb, atol=1e-6)
    per_image = embed_path(_model(), manifest, tmp_path / "g.parquet", CFG,
                           norm=NormSpec(scope="image"))  # fmt: skip
    assert per_image.norm_file is None
    assert np.abs(read_embeddings(per_image.out)[0] - emb).max() > 1e-3


def test_source_scaling_keeps_the_brightness_per_image_scaling_erases(
        manifest: Path, tmp_path: Path) -> None:  # fmt: skip
    """Plate p2 is p1 twice as bright: per plate, its cells embed like p1's; the dim (DMSO)
    and bright (drug) cells of one plate stay apart only with statistics."""
    src = read_embeddings(embed_path(_model(), manifest, tmp_path / "s.parquet", CFG).out)[0]
    img = read_embeddings(embed_path(_model(), manifest, tmp_path / "i.parquet", CFG,
                                     norm=NormSpec(scope="image")).out)[0]  # fmt: skip
    def gap(e: np.ndarray) -> float:  # DMSO rows 0, 1 vs drug rows 2, 3 of plate p1
        return float(np.linalg.norm(e[:2].mean(0) - e[2:4].mean(0)))

    assert gap(src) > 2 * gap(img)
    np.testing.assert_allclose(src[:4], src[4:], atol=0.05 * np.abs(src).max())


def test_controls_and_refusals(manifest: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="using the reference statistics"):
        s = embed_path(_model(), manifest, tmp_path / "c.parquet", CFG,
                       norm=NormSpec(fit_on="compound=DMSO"))  # 2 controls: too few pixels
    assert "compound=DMSO" in NormStats.load(s.norm_file).fitted_on  # type: ignore[arg-type]
    other = fit_sample_stats([Sample(_cell(1.0, 0), ["GFP", "mCherry"])], "reference")
    other.save(tmp_path / "other.json")
    out = tmp_path / "x.parquet"
    with pytest.raises(BadInputError, match="'DAPI' has no normalisation statistics"):
        embed_path(_model(), manifest, out, CFG, norm=NormSpec(stats_file=tmp_path / "other.json"))
    assert not work_dir(out).exists()  # refused before any work
    pinned = NormStats.load(s.norm_file)  # type: ignore[arg-type]
    pinned.model = "f" * 64
    pinned.save(tmp_path / "pinned.json")
    model = _model()
    model.weights_card = {"weights_sha256": "0" * 64}  # type: ignore[assignment]
    with pytest.raises(BadInputError, match="fitted for another model"):
        embed_path(model, manifest, out, CFG, norm=NormSpec(stats_file=tmp_path / "pinned.json"))
    with pytest.raises(BadInputError, match="--norm-by"):
        embed_path(_model(), manifest, out, CFG, norm=NormSpec(group_by="batch"))


def test_resume_reuses_the_saved_statistics(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    ref = embed_path(_model(), manifest, tmp_path / "ref.parquet", CFG)
    model = _model()
    calls = {"n": 0}
    forward = model.forward

    def failing(batch: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupt("simulated interruption")
        return forward(batch)  # type: ignore[arg-type]

    model.forward = failing  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        embed_path(model, manifest, out, CFG, chunk_images=2)
    assert (work_dir(out) / "norm_stats.json").is_file()
    with pytest.raises(BadInputError, match="different settings"):  # other fit rows: refused
        embed_path(_model(), manifest, out, CFG, chunk_images=2,
                   norm=NormSpec(fit_on="compound=DMSO"))  # fmt: skip
    done = embed_path(copy.deepcopy(_model()), manifest, out, CFG, chunk_images=2)
    assert done.n_resumed == 4
    np.testing.assert_allclose(read_embeddings(out)[0], read_embeddings(ref.out)[0], atol=1e-6)


def test_cli_options(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enc = save_encoder(_model(), tmp_path / "enc")
    parser = argparse.ArgumentParser(prog="biofm")
    embed_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "e.parquet"
    base = ["embed", str(manifest), "--model", str(enc), "--out", str(out), "--tile", "64",
            "--input-size", "32", "--no-progress"]  # fmt: skip
    args = parser.parse_args([*base, "--norm-by", "plate", "--norm-fit-on", "compound=DMSO"])
    with pytest.warns(UserWarning, match="reference statistics"):
        assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "scope source, statistics in" in text and norm_path(out).is_file()
    args = parser.parse_args([*base, "--norm-stats", str(norm_path(out)), "--norm", "image"])
    with pytest.raises(BadInputError, match="drop one of them"):
        args.func(args)


def test_mixed_channel_counts_are_batched_by_count_and_written_in_input_order(
        tmp_path: Path) -> None:  # fmt: skip
    import pandas as pd
    import tifffile

    from biofm.eval.embed_run import by_channel_count

    rng = np.random.default_rng(0)
    rows = []
    for i, c in enumerate([1, 3, 1, 2, 3, 1]):
        path = tmp_path / f"im{i}.tif"
        tifffile.imwrite(path, rng.integers(0, 4000, (c, 64, 64), dtype=np.uint16))
        rows.append({"id": f"im{i}", "paths": str(path),
                     "channels": ";".join(["DAPI", "actin", "tubulin"][:c])})
    df = pd.DataFrame(rows)
    assert list(by_channel_count(df)["id"]) == ["im0", "im2", "im5", "im3", "im1", "im4"]
    df.to_csv(tmp_path / "m.csv", index=False)
    s = embed_path(_model(), tmp_path / "m.csv", tmp_path / "e.parquet", CFG,
                   norm=NormSpec(scope="image"))  # fmt: skip
    emb, meta = read_embeddings(s.out)
    assert list(meta["id"]) == [r["id"] for r in rows]
    one = embed_path(_model(), tmp_path / "m.csv", tmp_path / "one.parquet",
                     EmbedConfig(tile=64, input_size=32, batch_size=1, progress=False),
                     norm=NormSpec(scope="image"))  # fmt: skip
    np.testing.assert_allclose(read_embeddings(one.out)[0], emb, atol=1e-5)


def test_statistics_for_other_channels_refused_up_front_for_unnamed_files(
        tmp_path: Path) -> None:  # fmt: skip
    """A folder of files without channel names: the names the files give are checked before
    any image is embedded."""
    import tifffile

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(folder / f"c{i}.tif", _cell(1.0, i))
    other = fit_sample_stats([Sample(_cell(1.0, 0), ["GFP", "mCherry"])], "reference")
    other.save(tmp_path / "other.json")
    out = tmp_path / "e.parquet"
    with pytest.raises(BadInputError, match="'unknown' has no normalisation statistics"):
        embed_path(_model(), folder, out, CFG, norm=NormSpec(stats_file=tmp_path / "other.json"))
    assert not work_dir(out).exists()
