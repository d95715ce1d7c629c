"""``biofm idr studies`` / ``biofm idr show`` on the real IDR catalogue files."""

from __future__ import annotations

import json

import pytest

from biofm.cli.main import main
from tests.idr import idr_catalog_dir


def test_studies_table(capsys: pytest.CaptureFixture[str]) -> None:
    cat = str(idr_catalog_dir())
    args = ["idr", "studies", "--catalog", cat, "--min-channels", "5", "--kind", "screen"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["study", "container", "images", "C", "XY", "size", "sample"]
    row = next(line for line in out if line.startswith("idr0036"))
    expected = ["idr0036-gustafsdottir-cellpainting", "screenA", "69120", "5", "696x520"]
    assert row.split()[:5] == expected
    assert out[-1].startswith(f"{len(out) - 2} containers in ")


def test_studies_json_parses(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["idr", "studies", "--catalog", str(idr_catalog_dir()), "--organism", "homo",
            "--max-channels", "3", "--json"]
    assert main(args) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and all(r["c"] <= 3 and "Homo" in r["organism"] for r in records)


def test_show_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    cat = str(idr_catalog_dir())
    assert main(["idr", "show", "idr0036", "--catalog", cat]) == 0
    text = capsys.readouterr().out
    assert "license: CC0 1.0" in text and "plates (20): 20585" in text
    assert "hoechst 33342:nucleus" in text
    assert main(["idr", "show", "idr0036", "--catalog", cat, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["containers"][0]["images"] == 69120


def test_errors_name_the_fix(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["idr", "show", "idr036", "--catalog", str(idr_catalog_dir())]) == 2
    assert "did you mean idr0036" in capsys.readouterr().err
    assert main(["idr", "studies", "--catalog", str(tmp_path)]) == 2
    assert "Fix:" in capsys.readouterr().err
