"""``biofm eval`` (knn, linear, regress, blocks) through a parser with only the eval command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biofm.cli import eval as eval_cli
from biofm.core.errors import BadInputError
from biofm.io.embeddings import read_embeddings, write_embeddings


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="biofm")
    sub = parser.add_subparsers(dest="command")
    eval_cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    y = np.repeat(np.arange(3), 20)
    emb = centres[y] + rng.normal(scale=0.1, size=(60, 8))
    meta = pd.DataFrame(
        {
            "cell_type": np.array(["a", "b", "c"])[y],
            "plate": np.tile(np.arange(6), 10),
            "note": [None if i == 0 else "x" for i in range(60)],
            "partial": [None if i < 3 else "abc"[y[i]] for i in range(60)],
            "nuclei": 3 * emb[:, 0] - emb[:, 1] + 50,
        }
    )
    return write_embeddings(tmp_path / "emb.parquet", emb, meta)


def test_knn_default_output(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["eval", "knn", str(table), "--label", "cell_type", "--k", "5"]) == 0
    out = table.with_name("emb.knn_cell_type.json")
    res = json.loads(out.read_text())
    assert res["label"] == "cell_type" and res["n_samples"] == 60 and res["n_classes"] == 3
    assert res["one_nn_macro_f1"]["mean"] == pytest.approx(1.0)
    assert res["knn_top1"]["k"] == 5
    printed = capsys.readouterr().out
    assert "1-NN macro-F1" in printed and "5-NN top-1 acc" in printed and str(out) in printed


def test_knn_grouped_custom_out(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "r" / "res.json"
    argv = ["eval", "knn", str(table), "--label", "cell_type", "--group", "plate"]
    assert _run([*argv, "--folds", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["grouped"] is True and res["n_splits"] == 3 and res["group"] == "plate"


def test_rows_without_label_are_skipped(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    assert _run(["eval", "knn", str(table), "--label", "partial", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_skipped_rows"] == 3 and res["n_samples"] == 57
    with pytest.raises(BadInputError, match="at least two classes"):
        _run(["eval", "knn", str(table), "--label", "note", "--out", str(out)])


def test_unknown_column_lists_available(table: Path) -> None:
    listed = r"no column 'celltype'.*cell_type, plate, note, partial"
    with pytest.raises(BadInputError, match=listed):
        _run(["eval", "knn", str(table), "--label", "celltype"])
    with pytest.raises(BadInputError, match="--group"):
        _run(["eval", "knn", str(table), "--label", "cell_type", "--group", "well"])


def test_eval_without_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["eval"]) == 2
    assert "knn" in capsys.readouterr().out


def test_default_out_name_is_safe() -> None:
    assert eval_cli.default_out(Path("/d/x.parquet"), "a b/c").name == "x.knn_a_b_c.json"


def test_linear_grouped(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "linear", str(table), "--label", "cell_type", "--group", "plate"]
    assert _run([*argv, "--folds", "3"]) == 0
    res = json.loads(table.with_name("emb.linear_cell_type.json").read_text())
    assert res["grouped"] is True and res["n_splits"] == 3 and res["group"] == "plate"
    assert res["accuracy"]["mean"] == pytest.approx(1.0) and len(res["macro_f1"]["folds"]) == 3
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "(grouped)" in printed


def test_regress(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert _run(["eval", "regress", str(table), "--target", "nuclei", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["target"] == "nuclei" and res["r2"]["mean"] > 0.95 and "mae" in res
    assert "R^2" in capsys.readouterr().out
    assert (
        _run(["eval", "regress", str(table), "--target", "nuclei", "--log1p", "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["log1p"] is True
    with pytest.raises(BadInputError, match="not numeric"):
        _run(["eval", "regress", str(table), "--target", "cell_type"])
    with pytest.raises(BadInputError, match=r"no column 'count'.*nuclei"):
        _run(["eval", "regress", str(table), "--target", "count"])


@pytest.mark.parametrize("suffix", [".parquet", ".zarr"])
def test_blocks(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 12)
    good = rng.normal(size=(36, 6)) + 6 * np.eye(6)[y]
    blocks = {0: rng.normal(size=(36, 4)), 5: good, 11: good + rng.normal(size=(36, 6))}
    meta = pd.DataFrame({"moa": np.array(["x", "y", "z"])[y], "well": np.arange(36) % 6})
    path = write_embeddings(tmp_path / f"b{suffix}", good, meta, blocks)
    _, got_meta = read_embeddings(path)
    assert list(got_meta.columns) == ["moa", "well"]
    for probe in ("knn", "linear"):
        argv = ["eval", "blocks", str(path), "--label", "moa", "--group", "well"]
        assert _run([*argv, "--probe", probe, "--folds", "3", "--k", "3"]) == 0
        res = json.loads(path.with_name("b.blocks_moa.json").read_text())
        assert [r["block"] for r in res["blocks"]] == [0, 5, 11]
        assert res["best_block"] == 5 and res["probe"] == probe
        printed = capsys.readouterr().out
        assert "best block: 5" in printed and "<- best" in printed
    plain = write_embeddings(tmp_path / "plain.parquet", good, meta)
    with pytest.raises(BadInputError, match="--blocks"):
        _run(["eval", "blocks", str(plain), "--label", "moa"])


def test_new_commands_name_missing_columns(table: Path) -> None:
    for cmd in ("linear", "blocks"):
        with pytest.raises(BadInputError, match=r"no column 'celltype'.*cell_type, plate"):
            _run(["eval", cmd, str(table), "--label", "celltype"])
