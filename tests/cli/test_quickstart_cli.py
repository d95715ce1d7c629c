"""The quickstart through the real CLI entry point (a shrunken screen and model), and the full
default quickstart as a slow test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biofm.cli.main import main
from biofm.data.synthetic import SyntheticScreenConfig
from biofm.train.quickstart import run_quickstart

SMALL = ["model.kwargs={patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}",
         "optim.epochs=1", "data.batch_size=16", "run.progress=false"]


def test_quickstart_small_writes_results_and_report(tmp_path: Path) -> None:
    res = run_quickstart(tmp_path, SMALL, SyntheticScreenConfig(n_images_per_treatment=8))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["knn_accuracy_pretrained"] == res["knn_accuracy_pretrained"]
    for key in ("knn_accuracy_pretrained", "knn_accuracy_random_init"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["n_images"] == 3 * 4 * 8
    assert set(saved["experiments"]) == {"expA", "expB", "expC"}
    report = (tmp_path / "report.md").read_text()
    assert "synthetic" in report.lower()
    assert (tmp_path / "embedding.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "encoder" / "encoder.safetensors").is_file()


def test_cli_errors_are_one_line_with_the_fix(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not found" in err and "Fix:" in err
    rc = main(["train", "--data", "x.csv", "--set", "optim.lrr=1"])
    assert rc == 2 and "did you mean optim.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_full_quickstart_pretrained_beats_random_init(tmp_path: Path) -> None:
    res = run_quickstart(tmp_path)
    assert res["knn_accuracy_pretrained"] > res["knn_accuracy_random_init"] + 0.05
    assert res["seconds_pretraining"] < 300  # the 5-minute budget on 2 cores


def test_yaml_preset_mirrors_the_embedded_quickstart_config() -> None:
    import yaml

    from biofm.train.quickstart import QUICKSTART_CONFIG

    preset = yaml.safe_load((Path(__file__).parents[2] / "configs" / "quickstart.yaml")
                            .read_text())
    preset["run"].pop("out_dir")
    assert preset == QUICKSTART_CONFIG
