"""``biofm embed`` at scale: resumable chunks, parquet/Zarr output, per-block features."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import biofm
from biofm.cli import embed as embed_cli
from biofm.core.errors import BadInputError
from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.eval.embed import EmbedConfig, resolve_block_spec
from biofm.eval.embed_run import embed_path, resolve_format, work_dir
from biofm.io.embeddings import read_blocks, read_embeddings
from biofm.models.io import save_encoder

TINY: dict[str, dict[str, Any]] = {
    "biovit_tiny": {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8},
    "boc_vit_tiny": {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8},
    "bioresnet18": {
        "widths": (8, 16, 16, 32),
        "stem_width": 8,
        "layers": (1, 1, 1, 1),
        "max_groups": 4,
    },
}
CFG = EmbedConfig(tile=32, input_size=32, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 small 5-channel images (4 treatments x 3) with a manifest."""
    cfg = SyntheticScreenConfig(
        n_images_per_treatment=3,
        n_plates=1,
        fields_per_well=1,
        image_size=32,
        experiments=DEFAULT_EXPERIMENTS[:1],
    )
    return write_screen(tmp_path_factory.mktemp("screen"), cfg)


def _model(name: str = "biovit_tiny", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return biofm.create_model(name, **TINY[name]).eval()


class Interrupt(RuntimeError):
    pass


def _counting(
    model: torch.nn.Module, calls: list[str], fail_after: int | None = None
) -> torch.nn.Module:
    """Record the image ids of every forward pass; raise on call ``fail_after + 1``."""
    forward = model.forward

    def counted(batch: Any) -> torch.Tensor:
        if fail_after is not None and len(calls) >= fail_after:
            raise Interrupt("simulated interruption")
        calls.append(";".join(dict.fromkeys(str(m["id"]) for m in batch.meta)))
        return forward(batch)

    model.forward = counted
    return model


def _ids(calls: list[str]) -> list[str]:
    return [i for c in calls for i in c.split(";")]


def test_resume_after_interrupt_matches_uninterrupted_run(manifest: Path, tmp_path: Path) -> None:
    model = _model()
    ref = embed_path(copy.deepcopy(model), manifest, tmp_path / "ref.parquet", CFG)
    out = tmp_path / "emb.parquet"
    first: list[str] = []
    with pytest.raises(Interrupt):  # chunks of 4 images = 2 batches; dies in batch 4
        embed_path(
            _counting(copy.deepcopy(model), first, fail_after=3), manifest, out, CFG, chunk_images=4
        )
    assert not out.exists() and len(list(work_dir(out).glob("chunk_*.npz"))) == 1
    second: list[str] = []
    summary = embed_path(
        _counting(copy.deepcopy(model), second), manifest, out, CFG, chunk_images=4
    )
    done_before = set(_ids(first)[:4])  # the saved chunk
    assert summary.n_resumed == 4 and summary.n_images == ref.n_images == 12
    assert not done_before & set(_ids(second)) and len(_ids(second)) == 8
    assert not work_dir(out).exists()
    emb, meta = read_embeddings(out)
    ref_emb, ref_meta = read_embeddings(tmp_path / "ref.parquet")
    np.testing.assert_allclose(emb, ref_emb, atol=1e-5)
    pd.testing.assert_frame_equal(meta, ref_meta)
    assert list(meta["id"]) == list(pd.read_csv(manifest)["id"])


def test_changed_model_or_inputs_are_refused(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.parquet"
    with pytest.raises(Interrupt):
        embed_path(_counting(_model(), [], fail_after=2), manifest, out, CFG, chunk_images=2)
    with pytest.raises(BadInputError, match=r"different model.*--restart"):
        embed_path(_model(seed=1), manifest, out, CFG)
    fewer = tmp_path / "fewer.csv"
    df = pd.read_csv(manifest)
    df["paths"] = [str(manifest.parent / p) for p in df["paths"]]
    df.iloc[:-1].to_csv(fewer, index=False)
    with pytest.raises(BadInputError, match=r"different inputs.*--restart"):
        embed_path(_model(), fewer, out, CFG)
    with pytest.raises(BadInputError, match=r"different settings"):
        embed_path(_model(), manifest, out, CFG, blocks="all")
    summary = embed_path(_model(seed=1), manifest, out, CFG, restart=True)
    assert summary.n_resumed == 0 and summary.n_images == 12


@pytest.mark.parametrize("name", list(TINY))
def test_zarr_with_blocks_for_every_family(name: str, manifest: Path, tmp_path: Path) -> None:
    model: Any = _model(name)
    n_blocks = int(model.num_blocks)
    out = tmp_path / "emb.zarr"
    summary = embed_path(model, manifest, out, CFG, blocks="all", chunk_images=4)
    assert summary.blocks == list(range(n_blocks))
    emb, meta = read_embeddings(out)
    blocks = read_blocks(out)
    assert emb.shape == (12, model.embed_dim) and np.isfinite(emb).all()
    assert sorted(blocks) == list(range(n_blocks)) and meta.shape[0] == 12
    assert all(v.shape[0] == 12 and np.isfinite(v).all() for v in blocks.values())
    if name != "boc_vit_tiny":  # the last block is the embedding (BoC: mean vs attention pool)
        np.testing.assert_allclose(blocks[n_blocks - 1], emb, atol=1e-5)
    parquet = tmp_path / "emb.parquet"
    embed_path(model, manifest, parquet, CFG, blocks=[-1])
    np.testing.assert_allclose(read_embeddings(parquet)[0], emb, atol=1e-5)
    assert list(read_blocks(parquet)) == [n_blocks - 1]


def test_block_spec_and_format_errors() -> None:
    model = _model()
    assert resolve_block_spec(model, None) is None
    assert resolve_block_spec(model, "all") == [0, 1]
    assert resolve_block_spec(model, "1,-2") == [0, 1]
    with pytest.raises(BadInputError, match="--blocks 3,6,11"):
        resolve_block_spec(model, "a,b")
    with pytest.raises(BadInputError, match="model has 2 blocks"):
        resolve_block_spec(model, "5")
    assert resolve_format(Path("e.zarr"), None) == "zarr"
    assert resolve_format(Path("e.parquet"), None) == "parquet"
    with pytest.raises(BadInputError, match=r"name the output e\.zarr"):
        resolve_format(Path("e.parquet"), "zarr")


def test_cli_embed(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enc = save_encoder(_model(), tmp_path / "enc")
    parser = argparse.ArgumentParser(prog="biofm")
    embed_cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "e.zarr"
    argv = [
        "embed",
        str(manifest),
        "--model",
        str(enc),
        "--out",
        str(out),
        "--tile",
        "32",
        "--input-size",
        "32",
        "--batch-size",
        "4",
        "--blocks",
        "0",
        "--no-progress",
    ]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "embedded 12 images (32-d, blocks 0)" in capsys.readouterr().out
    assert list(read_blocks(out)) == [0] and read_embeddings(out)[0].shape == (12, 32)
