"""``biofm data index`` / ``index-shared`` through a parser holding only the data command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import tifffile

from biofm.cli import data as data_cli
from biofm.core.errors import BadInputError
from biofm.io import read_manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biofm")
    data_cli.register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


def test_index_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    for ch in (2, 5):
        tifffile.imwrite(folder / f"r01c01f01p01-ch{ch}sk1fk1fl1.tiff", np.zeros((8, 8), "u2"))
    out = tmp_path / "m.csv"
    code = _run(["data", "index", str(folder), "--pattern", "phenix",
                 "--channel-map", "ch5=DNA, ch2=AGP", "--source", "demo", "--out", str(out),
                 "--pixel-size", "0.6"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 1 rows (1 sources)") and "2 ch: 1" in line
    df = read_manifest(out)
    assert df["channels"].tolist() == ["AGP;DNA"] and df["source"].tolist() == ["demo"]
    assert df["pixel_size_um"].tolist() == [0.6]


def test_bad_channel_map() -> None:
    with pytest.raises(BadInputError, match="KEY=NAME") as err:
        data_cli.parse_channel_map("ch5:DNA")
    assert "--channel-map ch5=DNA" in str(err.value)


def test_data_without_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["data"]) == 2
    assert "index-shared" in capsys.readouterr().out


def test_index_shared(shared_data: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corpus.csv"
    assert _run(["data", "index-shared", str(shared_data), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "wrote 771 rows (15 sources)" in line and "6 ch: 1" in line
    assert len(read_manifest(out)) == 771
    fold = tmp_path / "fold.csv"
    assert _run(["data", "index-shared", str(shared_data), "--exclude-source", "dsb2018",
                 "--exclude-source", "bbbc006", "--out", str(fold)]) == 0
    sources = set(read_manifest(fold)["source"])
    assert "dsb2018" not in sources and "bbbc006" not in sources and len(sources) == 13
    with pytest.raises(BadInputError, match="no source named nope"):
        _run(["data", "index-shared", str(shared_data), "--exclude-source", "nope",
              "--out", str(fold)])


def test_norm_stats_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    from biofm.data.norm_stats import NormStats
    from tests.data.test_norm_stats import _manifest

    csv = tmp_path / "m.csv"
    _manifest(tmp_path).to_csv(csv, index=False)
    out = tmp_path / "s.norm.json"
    assert _run(["data", "norm-stats", str(csv), "--out", str(out)]) == 0
    assert "statistics of 2 group(s) (plate)" in capsys.readouterr().out
    stats = NormStats.load(out)
    assert set(stats.groups) == {"p1", "p2"} and stats.channels == ["DAPI", "actin"]
    assert _run(["data", "norm-stats", str(csv), "--scope", "reference", "--fit-on",
                 "compound=DMSO", "--out", str(out)]) == 0
    assert NormStats.load(out).groups == {} and "compound=DMSO" in NormStats.load(out).fitted_on
    with pytest.raises(BadInputError, match="--norm-by"):
        _run(["data", "norm-stats", str(csv), "--by", "batch", "--out", str(out)])
    assert pd.read_csv(csv).shape[0] == 8
