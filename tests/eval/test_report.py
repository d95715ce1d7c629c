"""``biofm eval report``: files, self-contained HTML, numbers equal to the probes, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biofm.cli.main import main
from biofm.core.errors import BadInputError
from biofm.eval.blocks import block_probe
from biofm.eval.knn import evaluate_knn
from biofm.eval.linear import linear_classification
from biofm.eval.report import out_of_fold_predictions, write_report
from biofm.io.embeddings import write_embeddings

N_CLASSES, PER_CLASS, N_PLATES = 3, 24, 4


def _data() -> tuple[np.ndarray, pd.DataFrame, dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    plate = np.tile(np.arange(N_PLATES), N_CLASSES * PER_CLASS // N_PLATES)
    signal = np.eye(8)[y]
    emb = rng.normal(size=(len(y), 8)) + 2.0 * signal
    blocks = {
        0: rng.normal(size=(len(y), 6)),  # noise
        1: rng.normal(size=(len(y), 8)) + 4.0 * signal,  # the separable block
        2: rng.normal(size=(len(y), 8)) + 0.5 * signal,
    }
    moa = np.array(["actin", "dna", "tubulin"])[y]
    meta = pd.DataFrame({"moa": moa, "plate": [f"P{p}" for p in plate], "well": np.arange(len(y))})
    return emb, meta, blocks


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, np.ndarray, pd.DataFrame]:
    emb, meta, blocks = _data()
    out = tmp_path_factory.mktemp("report")
    res = write_report(emb, meta, out, label="moa", plate="plate", group="plate", blocks=blocks,
                       title="Test screen", n_splits=4, seed=0, k=5)  # fmt: skip
    return out, res, emb, meta


def test_files_and_self_contained_html(report: tuple[Path, dict, np.ndarray, pd.DataFrame]) -> None:
    out, res, _, _ = report
    for name in ("report.md", "report.html", "report.json", "projection.png", "confusion.png",
                 "blocks.png"):  # fmt: skip
        assert (out / name).is_file(), name
        assert name in res["files"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    assert "<style>" in html and "Test screen" in html
    md = (out / "report.md").read_text()
    assert "![" in md and "(projection.png)" in md and "(confusion.png)" in md
    assert md.count("How to read this") == 4


def test_numbers_equal_the_probes(report: tuple[Path, dict, np.ndarray, pd.DataFrame]) -> None:
    out, _, emb, meta = report
    saved = json.loads((out / "report.json").read_text())
    labels, plates = meta["moa"].to_numpy(), meta["plate"].to_numpy()
    knn = evaluate_knn(emb, labels, groups=plates, k=5, n_splits=4, seed=0)
    assert saved["knn"]["one_nn_macro_f1"] == knn["one_nn_macro_f1"]
    assert saved["knn"]["knn_top1"] == knn["knn_top1"]
    lin = linear_classification(emb, labels, plates, n_splits=4, seed=0)
    assert saved["linear"]["accuracy"] == lin["accuracy"]
    assert saved["linear"]["macro_f1"] == lin["macro_f1"]
    assert saved["n_images"] == len(meta) and saved["n_classes"] == N_CLASSES
    md = (out / "report.md").read_text()
    assert f"{knn['one_nn_macro_f1']['mean']:.3f} ± {knn['one_nn_macro_f1']['std']:.3f}" in md
    assert "each plate kept whole" in md


def test_confusion_rows_sum_to_one(report: tuple[Path, dict, np.ndarray, pd.DataFrame]) -> None:
    out, _, emb, meta = report
    conf = json.loads((out / "report.json").read_text())["confusion"]
    matrix = np.asarray(conf["matrix"])
    assert conf["classes"] == ["actin", "dna", "tubulin"]
    assert matrix.shape == (N_CLASSES, N_CLASSES)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    y, pred, _ = out_of_fold_predictions(emb, meta["moa"], meta["plate"], n_splits=4, seed=0)
    recall = [np.mean(pred[y == i] == i) for i in range(N_CLASSES)]
    np.testing.assert_allclose(np.diag(matrix), recall)


def test_best_block_and_projection(report: tuple[Path, dict, np.ndarray, pd.DataFrame]) -> None:
    out, res, _, meta = report
    _, _, blocks = _data()
    expected = block_probe(blocks, meta["moa"], meta["plate"], "knn", n_splits=4, seed=0, k=5)
    assert res["blocks"]["best_block"] == expected["best_block"] == 1
    md = (out / "report.md").read_text()
    assert f"Best block: {expected['best_block']} " in md
    assert res["projection"]["method"] == "PCA"  # umap-learn is not installed here
    assert "Projection: PCA" in md and "Projection: PCA" in (out / "report.html").read_text()


def test_deterministic(tmp_path: Path) -> None:
    emb, meta, _ = _data()
    a = write_report(emb, meta, tmp_path / "a", label="moa", n_splits=3, k=5)
    b = write_report(emb, meta, tmp_path / "b", label="moa", n_splits=3, k=5)
    assert a["knn"] == b["knn"] and a["confusion"] == b["confusion"] and a["blocks"] is None
    assert (tmp_path / "a/report.md").read_text() == (tmp_path / "b/report.md").read_text()
    assert not (tmp_path / "a/blocks.png").exists()


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    emb, meta, _ = _data()
    with pytest.raises(BadInputError, match=r"no column 'moas'.*moa, plate, well"):
        write_report(emb, meta, tmp_path, label="moas")


@pytest.mark.parametrize("suffix", [".parquet", ".zarr"])
def test_cli(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb, meta, blocks = _data()
    table = write_embeddings(tmp_path / f"emb{suffix}", emb, meta, blocks)
    argv = ["eval", "report", str(table), "--label", "moa", "--plate", "plate", "--folds", "3"]
    assert main([*argv, "--k", "5", "--title", "CLI screen"]) == 0
    out = tmp_path / "emb.report_moa"
    res = json.loads((out / "report.json").read_text())
    assert res["title"] == "CLI screen" and res["blocks"]["best_block"] == 1
    printed = capsys.readouterr().out
    assert "1-NN macro-F1" in printed and "projection: PCA" in printed and "report.html" in printed


def test_cli_missing_label_lists_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb, meta, _ = _data()
    table = write_embeddings(tmp_path / "emb.parquet", emb, meta)
    assert main(["eval", "report", str(table), "--label", "moas", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no column 'moas' for --label" in err and "moa, plate, well" in err
    assert main(["eval", "report", str(table), "--label", "moa", "--plate", "plat"]) == 2
    assert "no column 'plat' for --plate" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
