"""``biofm idr studies --live URL`` against the stand-in IDR."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("httpx")

from biofm.cli.main import main
from biofm.idr.testing import StandInIDR


def test_studies_live_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    with StandInIDR() as idr:
        idr.add_study("idr0036", plates=1, wells=4, fields=1, size=64)
        assert main(["idr", "studies", "--live", idr.url, "--min-channels", "5"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert main(["idr", "studies", "--live", idr.url, "--json", "--study", "idr0036"]) == 0
        records = json.loads(capsys.readouterr().out)
    assert out[0].split() == ["study", "container", "images", "C", "XY", "size", "sample"]
    row = next(line for line in out if line.startswith("idr0036"))
    assert row.split() == [
        "idr0036-gustafsdottir-cellpainting",
        "screenA",
        "4",
        "5",
        "64x64",
        "?",
        "cell",
    ]
    assert out[-1] == "1 containers in 1 studies, 4 images"
    assert [r["study_id"] for r in records] == ["idr0036"] and records[0]["c"] == 5
