"""Every dataset of the shared real-data corpus indexes and loads, with the README's channels.

Skipped (with the reason) when ../shared/data is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from biofm.io import build_manifest, channel_counts, iter_samples, shared_corpus_manifest

# source -> (rows, {channels per row: rows}) as the README describes the corpus
EXPECTED = {
    "dsb2018": (664, {"1": 557, "3": 107}),
    "jump_BR00117006": (1, {"3": 1}),
    "pediatric_BR00143976": (1, {"6": 1}),
    "nf1_plate2": (5, {"3": 5}),
    "bbbc022": (1, {"5": 1}),
    "ExampleHuman": (1, {"3": 1}),
    "ExampleFly": (3, {"3": 3}),
    "ExampleSpeckles": (1, {"2": 1}),
    "ExampleColocalization": (2, {"2": 2}),
    "ExampleIlluminationCorrection": (72, {"1": 72}),
    "ExampleIlluminationCorrection_extra": (2, {"1": 2}),
    "ExampleStraightenWorms": (1, {"3": 1}),
    "ExampleUntangleWorms": (2, {"2": 2}),
    "ExampleCometAssay": (2, {"1": 2}),
    "bbbc006": (13, {"1": 13}),
}


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> pd.DataFrame:
    return shared_corpus_manifest(shared_data)


def test_corpus_rows_and_channel_counts(corpus: pd.DataFrame) -> None:
    got = {src: (len(g), dict(channel_counts(g))) for src, g in corpus.groupby("source")}
    assert got == EXPECTED
    assert corpus["id"].is_unique


def test_corpus_channel_names_follow_the_readme(corpus: pd.DataFrame) -> None:
    names = corpus.groupby("source")["channels"].first()
    assert names["jump_BR00117006"] == "AGP;RNA;DNA"
    assert names["pediatric_BR00143976"] == "brightfield;ER;AGP;Mito;DNA;RNA"
    assert names["nf1_plate2"] == "DAPI;GFP;RFP"
    assert names["bbbc022"] == "ERSyto;ERSytoBleed;Hoechst;Mito;Ph_golgi"
    assert names["ExampleHuman"] == "DNA;PH3;cell body"
    dsb = corpus[corpus["source"] == "dsb2018"]
    assert set(dsb["channels"]) == {"nuclear stain", "brightfield", "red;green;blue"}
    assert set(dsb["modality"]) == {"fluorescence", "histology", "brightfield"}
    assert dsb["n_nuclei"].notna().all()
    focus = corpus[(corpus["source"] == "bbbc006") & (corpus["split"] == "training")]
    assert sorted(focus["defocus"]) == list(range(11))
    comet = corpus[corpus["source"] == "ExampleCometAssay"].set_index("id")["label"]
    assert comet.to_dict() == {"ExampleCometAssay/CometTails": "comet",
                               "ExampleCometAssay/NoTails": "no comet"}
    wells = corpus[corpus["source"] == "ExampleIlluminationCorrection"]["well"]
    assert wells.nunique() == 24


def test_every_row_loads(corpus: pd.DataFrame) -> None:
    by_source: dict[str, list[tuple[int, ...]]] = {}
    for sample in iter_samples(corpus):
        names = corpus.loc[corpus["id"] == sample.meta["id"], "channels"].item().split(";")
        assert sample.channels == names
        by_source.setdefault(sample.meta["source"], []).append(sample.shape)
        assert not any(pd.isna(v) for v in sample.meta.values())  # only columns with values
        src = sample.meta["source"]
        if src == "ExampleSpeckles":  # 12-bit data in uint16
            assert sample.pixels.dtype == np.uint16 and sample.pixels.max() <= 4095
        if src in ("ExampleColocalization", "bbbc006", "jump_BR00117006"):
            assert sample.pixels.dtype == np.uint16
        if src == "dsb2018":
            assert sample.pixels.dtype == np.uint8 and sample.num_channels in (1, 3)
    assert {k: len(v) for k, v in by_source.items()} == {k: v[0] for k, v in EXPECTED.items()}
    assert by_source["pediatric_BR00143976"] == [(6, 1080, 1080)]
    assert by_source["nf1_plate2"] == [(3, 904, 1224)] * 5


def test_bbbc006_is_lzw(shared_data: Path) -> None:
    path = next((shared_data / "focus_bbbc006" / "training" / "0").glob("*.tif"))
    with tifffile.TiffFile(path) as tf:
        assert tf.pages.first.compression.name == "LZW"


# folder -> (pattern, rows, channels per row) for build_manifest on each dataset folder
FOLDERS = [
    ("dsb2018", "auto", 664, {"?": 664}),
    ("cellpainting_fields/jump_BR00117006", "auto", 1, {"3": 1}),
    ("cellpainting_fields/pediatric_BR00143976", "auto", 1, {"6": 1}),
    ("cellpainting_fields/nf1_plate2", "auto", 5, {"3": 5}),
    ("cellpainting_site_bbbc022", "folders", 1, {"5": 1}),
    ("cellprofiler_examples/ExampleHuman", "auto", 1, {"3": 1}),
    ("cellprofiler_examples/ExampleFly", "auto", 3, {"3": 3}),
    ("cellprofiler_examples/ExampleSpeckles", r"(?P<s>.+?)(?P<channel>h2ax|hoe)\d+\.tif", 1,
     {"2": 1}),
    ("cellprofiler_examples/ExampleColocalization", "auto", 2, {"2": 2}),
    ("cellprofiler_examples/ExampleIlluminationCorrection", "auto", 74, {"1": 72, "?": 2}),
    ("cellprofiler_examples/ExampleIlluminationCorrection", "d", 72, {"1": 72}),
    ("cellprofiler_examples/ExampleStraightenWorms", "auto", 1, {"3": 1}),
    ("cellprofiler_examples/ExampleUntangleWorms", "auto", 2, {"2": 2}),
    ("cellprofiler_examples/ExampleCometAssay", "auto", 2, {"?": 2}),
    ("focus_bbbc006", "auto", 13, {"1": 11, "?": 2}),
]


@pytest.mark.parametrize(("folder", "pattern", "rows", "counts"), FOLDERS)
def test_build_manifest_on_each_folder(
    shared_data: Path, folder: str, pattern: str, rows: int, counts: dict[str, int]
) -> None:
    df = build_manifest(shared_data / folder, pattern)
    assert len(df) == rows
    assert dict(channel_counts(df)) == counts
    assert not df["paths"].str.contains("/masks/|/labels/").any()
