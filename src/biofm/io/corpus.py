"""The shared real-data corpus (``../shared/data``) as one manifest, channel names from its README.

Each dataset is indexed with :func:`build_manifest` and its own pattern and channel map;
constant columns (plate, modality, ...) and per-dataset fixes (DSB ``index.csv``, BBBC006
defocus from ``training/<k>``, comet labels) are added here. Choices:

- DSB2018 grey images are named ``nuclear stain`` (fluorescence) or ``brightfield``;
  RGB histology ``red;green;blue``. ``labels/`` (instance masks) and nf1 ``masks/`` are
  not images to learn from and are excluded.
- ExampleIlluminationCorrection: the 72 Transfluor GFP fields form that source; its two
  unrelated files (``--W00001--...--cherry.tif``, ``ADSAStaphInfection2_A01_w2...tif``) are
  kept as single-file fields under ``ExampleIlluminationCorrection_extra`` with the channel
  named in their file name (``cherry``, ``w2``).
- Channels the README does not name keep their acquisition key (``w1``, ``w2``) or
  ``unknown`` (comet assay).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biofm.core.errors import BadInputError
from biofm.io.manifest import build_manifest, order_columns

log = logging.getLogger(__name__)

Fix = Callable[[pd.DataFrame, Path], pd.DataFrame]
FLUO = {"modality": "fluorescence"}


@dataclass(frozen=True)
class CorpusDataset:
    """How to index one dataset folder of the shared corpus."""

    source: str
    folder: str
    pattern: str
    channel_map: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, Any] = field(default_factory=dict)
    pixel_size_um: float | None = None
    fix: Fix | None = None


def _dsb(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    index_csv = folder.parent / "index.csv"
    if not index_csv.is_file():
        log.warning("%s missing: DSB channel names and labels left empty", index_csv)
        return df
    index = pd.read_csv(index_csv, dtype={"image_id": str}).set_index("image_id")
    stems = [str(i).rsplit("/", 1)[-1] for i in df["id"]]
    info = index.reindex(stems)
    names = np.where(
        info["channels"] == 3, "red;green;blue",
        np.where(info["modality"] == "brightfield", "brightfield", "nuclear stain"),
    )
    df["channels"] = np.where(info["channels"].isna(), "", names)
    df["modality"] = info["modality"].to_numpy()
    for col in ("n_nuclei", "median_nucleus_area"):
        df[col] = pd.array(info[col].to_numpy(), dtype="Int64")
    return df


def _comet(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    df["channels"] = "unknown"
    df["label"] = ["no comet" if i.endswith("NoTails") else "comet" for i in df["id"]]
    return df


def _bbbc006(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    levels: list[int | None] = []
    splits: list[str] = []
    for paths in df["paths"]:
        m = re.search(r"[/\\](training|test)[/\\](?:(\d+)[/\\])?", str(paths))
        splits.append(m.group(1) if m else "")
        levels.append(int(m.group(2)) if m and m.group(2) else None)
    df["split"], df["defocus"] = splits, pd.array(levels, dtype="Int64")
    df["channels"] = "Hoechst 33342"  # BBBC006 w1 = Hoechst 33342; the test files too
    return df


def _illumination(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    extra = df["channels"] == ""  # the two files the 'd' pattern does not explain
    for i in df.index[extra]:
        name = Path(str(df.at[i, "paths"])).stem
        cherry = re.search(r"--([A-Za-z]+)$", name)
        metaxpress = re.search(r"_([A-P]\d{2})_(w\d)", name)
        df.at[i, "channels"] = cherry.group(1) if cherry else (
            metaxpress.group(2) if metaxpress else "unknown"
        )
        if metaxpress:
            df.at[i, "well"] = metaxpress.group(1)
    df.loc[extra, "source"] = "ExampleIlluminationCorrection_extra"
    df.loc[extra, "id"] = [f"ExampleIlluminationCorrection_extra/{i.split('/', 1)[1]}"
                           for i in df.loc[extra, "id"]]
    return df


#: Where each corpus source comes from and under which licence (from ``../shared/data``'s
#: README): a released model's card lists these for the sources it was trained on.
PROVENANCE: dict[str, dict[str, str]] = {
    "dsb2018": {"dataset": "2018 Data Science Bowl stage 1 (BBBC038)", "licence": "CC0-1.0",
                "url": "https://bbbc.broadinstitute.org/BBBC038"},
    "jump_BR00117006": {"dataset": "JUMP Cell Painting cpg0000, plate BR00117006",
                        "licence": "CC0-1.0", "url": "https://github.com/jump-cellpainting"},
    "pediatric_BR00143976": {"dataset": "pediatric cancer Cell Painting plate BR00143976",
                             "licence": "BSD-3-Clause"},
    "nf1_plate2": {"dataset": "NF1 Schwann-cell Cell Painting, plate 2", "licence": "BSD-3-Clause"},
    "bbbc022": {"dataset": "BBBC022 Cell Painting (U2OS), one site", "licence": "CC0-1.0",
                "url": "https://bbbc.broadinstitute.org/BBBC022"},
    "ExampleHuman": {"dataset": "CellProfiler ExampleHuman (HeLa)", "licence": "CC0-1.0",
                     "url": "https://github.com/CellProfiler/examples"},
    "bbbc006": {"dataset": "BBBC006 focus stacks (U2OS)", "licence": "CC0-1.0",
                "url": "https://bbbc.broadinstitute.org/BBBC006"},
}
for _name in ("ExampleFly", "ExampleSpeckles", "ExampleColocalization",
              "ExampleIlluminationCorrection", "ExampleIlluminationCorrection_extra",
              "ExampleStraightenWorms", "ExampleUntangleWorms", "ExampleCometAssay"):
    PROVENANCE[_name] = {"dataset": f"CellProfiler example image set {_name}",
                         "licence": "BSD-3-Clause", "url": "https://github.com/CellProfiler/examples"}


_CP = "cellprofiler_examples/"
DATASETS: tuple[CorpusDataset, ...] = (
    CorpusDataset("dsb2018", "dsb2018/images", "single", fix=_dsb),
    CorpusDataset(
        "jump_BR00117006", "cellpainting_fields/jump_BR00117006", "phenix",
        {"ch2": "AGP", "ch3": "RNA", "ch5": "DNA"},
        {"plate": "BR00117006", **FLUO}, pixel_size_um=0.598,
    ),
    CorpusDataset(
        "pediatric_BR00143976", "cellpainting_fields/pediatric_BR00143976", "phenix",
        {"ch1": "brightfield", "ch2": "ER", "ch3": "AGP", "ch4": "Mito", "ch5": "DNA",
         "ch6": "RNA"},
        {"plate": "BR00143976", **FLUO},
    ),
    CorpusDataset(
        "nf1_plate2", "cellpainting_fields/nf1_plate2/images",
        r"(?P<well>[A-P]\d{1,2})_\d+_\d+_(?P<site>\d+)_(?P<channel>[A-Za-z0-9]+)_\d+\.tif",
        {}, {"plate": "Plate_2", **FLUO},
    ),
    CorpusDataset("bbbc022", "cellpainting_site_bbbc022", "folders", {}, FLUO),
    CorpusDataset(
        "ExampleHuman", _CP + "ExampleHuman/images", "d",
        {"d0": "DNA", "d1": "PH3", "d2": "cell body"}, FLUO,
    ),
    CorpusDataset(
        "ExampleFly", _CP + "ExampleFly/images", "suffix",
        {"D": "DAPI", "F": "FITC", "R": "rhodamine"}, FLUO,
    ),
    CorpusDataset(
        "ExampleSpeckles", _CP + "ExampleSpeckles/images",
        r"(?P<sample>.+?)(?P<channel>h2ax|hoe)(?P<replicate>\d+)\.tif",
        {"h2ax": "γH2AX", "hoe": "Hoechst"}, FLUO,
    ),
    CorpusDataset(
        "ExampleColocalization", _CP + "ExampleColocalization/images", "suffix",
        {"G": "green", "R": "red"}, FLUO,
    ),
    CorpusDataset(
        "ExampleIlluminationCorrection", _CP + "ExampleIlluminationCorrection/images", "auto",
        {"d2": "GFP"}, FLUO, fix=_illumination,
    ),
    CorpusDataset("ExampleStraightenWorms", _CP + "ExampleStraightenWorms/images", "w"),
    CorpusDataset("ExampleUntangleWorms", _CP + "ExampleUntangleWorms/images", "w"),
    CorpusDataset("ExampleCometAssay", _CP + "ExampleCometAssay/images", "single", fix=_comet),
    CorpusDataset("bbbc006", "focus_bbbc006", "auto", {}, FLUO, fix=_bbbc006),
)


def index_dataset(data_root: Path, spec: CorpusDataset) -> pd.DataFrame:
    """Manifest of one dataset of the shared corpus."""
    folder = Path(data_root) / spec.folder
    df = build_manifest(
        folder, spec.pattern, spec.channel_map, spec.source, pixel_size_um=spec.pixel_size_um
    )
    for col, value in spec.columns.items():
        df[col] = value
    return spec.fix(df, folder) if spec.fix else df


def shared_corpus_manifest(data_root: str | Path) -> pd.DataFrame:
    """The whole shared corpus in one manifest (datasets whose folder is absent are skipped)."""
    root = Path(data_root)
    if not root.is_dir():
        raise BadInputError(
            "data folder not found", "pass the folder holding dsb2018/, cellpainting_fields/ ...",
            str(root),
        )
    frames = []
    for spec in DATASETS:
        if not (root / spec.folder).is_dir():
            log.warning("%s: folder %s absent; skipped", spec.source, root / spec.folder)
            continue
        frames.append(index_dataset(root, spec))
    if not frames:
        raise BadInputError(
            "none of the corpus datasets is in this folder",
            "pass the shared data folder (with README.md, dsb2018/, ...)", str(root),
        )
    return order_columns(pd.concat(frames, ignore_index=True))
