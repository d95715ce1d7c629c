"""The catalogue read from the live API, against the stand-in IDR."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("httpx")

from biofm.idr.http import IDRClient, RetryPolicy
from biofm.idr.live import live_catalog, live_studies
from biofm.idr.testing import StandInIDR, status

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02, timeout_s=5.0)
CATALOG_COLUMNS = ["study", "study_id", "container", "kind", "images", "sets", "wells", "x",
                   "y", "z", "c", "t", "size_tb", "sample_type", "license", "organism",
                   "imaging_method", "n_channel_labels"]  # fmt: skip


def test_live_row_for_idr0036() -> None:
    with StandInIDR() as idr:
        study = idr.add_study("idr0036", plates=1, wells=4, fields=2, size=128)
        idr.faults.add("/api/v0/m/screens/", status(503))
        with IDRClient(idr.url, policy=FAST) as client:
            cat = live_catalog(client)
    assert idr.hits["/api/v0/m/screens/"] == 2  # the 503 was retried
    assert set(CATALOG_COLUMNS) <= set(cat.table.columns)
    assert len(cat) == len(idr.screen_names) + 1  # screens without plates keep a row
    row = cat.filter(study="idr0036").to_records()
    assert len(row) == 1
    r = row[0]
    info = dict(study.info)
    assert (r["study"], r["study_id"], r["container"], r["kind"]) == (
        "idr0036-gustafsdottir-cellpainting",
        "idr0036",
        "screenA",
        "screen",
    )
    assert r["c"] == 5 and r["n_channel_labels"] == len(set(study.channels))
    assert (r["x"], r["y"], r["z"], r["t"]) == (128, 128, 1, 1)
    assert r["images"] == len(study.images) == 8 and r["wells"] == 4 and r["sets"] == 1
    assert r["counts_exact"] is True and r["internal_id"] == study.screen_id
    assert r["organism"] == info["Organism"] and r["sample_type"] == info["Sample Type"]
    assert r["imaging_method"] == info["Imaging Method"]
    assert pd.isna(cat.table.loc[cat.table["study_id"] == "idr0036", "size_tb"]).all()
    json.dumps(cat.to_records())
    kept = cat.filter(min_channels=5, organism="homo", sample_type="cell")
    assert list(kept.table["study_id"]) == ["idr0036"]
    assert len(cat.filter(min_images=9)) == 0


def test_counts_are_estimated_from_the_first_plate_unless_exact() -> None:
    with StandInIDR(screens=()) as idr:
        study = idr.add_study("idr0036", plates=2, wells=3, fields=1, size=64)
        with IDRClient(idr.url, policy=FAST) as client:
            quick = live_studies(client)
            exact = live_studies(client, exact_counts=True)
            first = live_studies(client, max_screens=1)
    assert len(first) == 1
    assert quick["images"].tolist() == [len(study.images)]
    assert not quick["counts_exact"].iloc[0] and exact["counts_exact"].iloc[0]
    assert exact["images"].tolist() == [len(study.images)] and exact["wells"].tolist() == [6]
