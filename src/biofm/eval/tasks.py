"""Downstream tasks built from real images (``../shared/data``) and one natural-image task.

Each builder returns a `Task`: raw images (``Sample``s of one size, channel names kept), a
target, optional CV groups or a fixed train/test split, the corpus ``source`` its images come
from (an encoder scored on a task must not have seen that source), and what is scored:

- ``dsb_modality``: DSB2018 fields (centre 256² crop), fluorescence / histology / brightfield,
  at most ``per_class`` per class; 1-NN macro-F1 and linear accuracy.
- ``dsb_nuclei``: DSB2018 fluorescence fields of exactly 256², ``log1p(nucleus count)``;
  ridge R².
- ``ph3_mitosis``: cells of CellProfiler's ExampleHuman HeLa field: 48² crops around nuclei
  found in the DNA channel, fed with the DNA and cell-body channels only; the label (mitotic)
  is a PH3 signal above an Otsu threshold over the cells' mean nuclear PH3, so the encoder
  must see mitosis in the morphology, not in the marker.
- ``bbbc021_condition``: BBBC021 MCF-7 single-cell crops, DMSO / cycloheximide 5, 15, 50 µM;
  trained on four plates, scored on the held-out plate (never in a pretraining corpus).
- ``defocus``: BBBC006 64² patches at defocus 0..10 (one field per level); folds grouped by
  field, pooled out-of-fold ridge R² of the level.
- ``cp_same_field``: 128² tiles of the Cell Painting fields (JUMP, pediatric, NF1, BBBC022:
  3, 5 and 6 channels); mAP of retrieving tiles of the same field.
- ``digits``: scikit-learn's 8×8 handwritten digits upsampled ×4 (natural images, 1 channel);
  1-NN macro-F1 and linear accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.data.crops import nucleus_labels, otsu_threshold
from biofm.io.corpus import shared_corpus_manifest
from biofm.io.manifest import records
from biofm.io.samples import load_sample

log = logging.getLogger(__name__)


@dataclass
class Task:
    name: str
    kind: str  # "classification", "regression" or "retrieval"
    images: list[Sample]
    target: np.ndarray
    groups: np.ndarray | None = None
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    train: np.ndarray | None = None  # (N,) bool: a fixed train/test split (else CV folds)
    source: str = ""  # the corpus source(s) the images come from ("" = never in the corpus)


def _centre(x: np.ndarray, size: int) -> np.ndarray:
    _, h, w = x.shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(x[:, y0 : y0 + size, x0 : x0 + size])


def _tiles(x: np.ndarray, size: int, most: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Non-overlapping ``size``² tiles of a (C, H, W) image, at most ``most`` (random ones)."""
    _, h, w = x.shape
    spots = [(y, x0) for y in range(0, h - size + 1, size) for x0 in range(0, w - size + 1, size)]
    keep = sorted(rng.choice(len(spots), min(most, len(spots)), replace=False))
    return [np.ascontiguousarray(x[:, y:y + size, x0:x0 + size]) for y, x0 in
            (spots[k] for k in keep)]  # fmt: skip


def _rows(corpus: Any, source: str) -> list[dict[str, Any]]:
    return records(corpus[corpus["source"] == source])


def _sample(pixels: np.ndarray, channels: list[str], **meta: Any) -> Sample:
    return Sample(pixels, list(channels), None, dict(meta))


def dsb_modality(corpus: Any, root: Path, rng: np.random.Generator, per_class: int = 60) -> Task:
    rows = _rows(corpus, "dsb2018")
    images, labels = [], []
    for modality in ("fluorescence", "histology", "brightfield"):
        mine = [r for r in rows if r.get("modality") == modality]
        for k in sorted(rng.choice(len(mine), min(per_class, len(mine)), replace=False)):
            s = load_sample(mine[k], root)
            images.append(_sample(_centre(s.pixels, 256), s.channels, id=mine[k]["id"]))
            labels.append(modality)
    return Task("dsb_modality", "classification", images, np.array(labels),
                note="DSB2018 centre 256² crops, <= 60 per modality",
                source="dsb2018")  # fmt: skip


def dsb_nuclei(corpus: Any, root: Path, rng: np.random.Generator, most: int = 150) -> Task:
    rows = [r for r in _rows(corpus, "dsb2018") if r.get("modality") == "fluorescence"]
    images, counts = [], []
    for r in rows:
        s = load_sample(r, root)
        if s.pixels.shape[1:] == (256, 256) and r.get("n_nuclei") is not None:
            images.append(_sample(s.pixels, s.channels, id=r["id"]))
            counts.append(float(r["n_nuclei"]))
        if len(images) == most:
            break
    return Task("dsb_nuclei", "regression", images, np.log1p(np.array(counts)),
                note="DSB2018 fluorescence 256² fields; target log1p(nuclei)",
                source="dsb2018")  # fmt: skip


def ph3_mitosis(corpus: Any, root: Path, rng: np.random.Generator, crop: int = 48) -> Task:
    rows = _rows(corpus, "ExampleHuman")
    if not rows:
        raise BadInputError("ExampleHuman is not in the corpus", "check ../shared/data")
    s = load_sample(rows[0], root)
    names = list(s.channels)
    dna, ph3 = names.index("DNA"), names.index("PH3")
    labels, n = nucleus_labels(s.pixels[dna], sigma=1.5, min_area=40)
    index = np.arange(1, n + 1)
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, index)
    ph3_mean = np.asarray(ndimage.mean(s.pixels[ph3].astype(np.float64), labels, index))
    log_ph3 = np.log1p(ph3_mean)
    thr = otsu_threshold(log_ph3, bins=64)
    if thr is None:
        raise BadInputError("no PH3 contrast between cells", "check the ExampleHuman images")
    kept = [k for k in range(len(names)) if k != ph3]
    half = crop // 2
    _, h, w = s.pixels.shape
    images: list[Sample] = []
    target = []
    for (cy, cx), value in zip(centres, log_ph3, strict=True):
        y, x = round(cy), round(cx)
        if half <= y <= h - half and half <= x <= w - half:
            px = s.pixels[kept, y - half : y + half, x - half : x + half]
            images.append(_sample(px, [names[k] for k in kept], id=f"cell{len(images)}"))
            target.append("mitotic" if value > thr else "interphase")
    return Task("ph3_mitosis", "classification", images, np.array(target),
                note=f"ExampleHuman {crop}² cell crops, DNA + cell body (PH3 withheld)",
                info={"positives": int(sum(t == "mitotic" for t in target))},
                source="ExampleHuman")  # fmt: skip


def defocus(corpus: Any, root: Path, rng: np.random.Generator, per_field: int = 40) -> Task:
    """BBBC006 64² patches (``per_field`` random non-overlapping ones per field); each defocus
    level is a different field, so folds grouped by field hold out whole levels and the
    probe must interpolate the level from what it sees (pooled out-of-fold R²)."""
    rows = [r for r in _rows(corpus, "bbbc006") if r.get("defocus") is not None]
    images: list[Sample] = []
    target, groups = [], []
    for r in rows:
        s = load_sample(r, root)
        for t in _tiles(s.pixels, 64, per_field, rng):
            images.append(_sample(t, s.channels, id=f"{r['id']}#{len(images)}"))
            target.append(float(r["defocus"]))
            groups.append(r["id"])
    return Task("defocus", "regression", images, np.array(target), np.array(groups),
                note="BBBC006 64² patches; target defocus level 0..10; folds grouped by field",
                info={"pooled": True}, source="bbbc006")  # fmt: skip


CP_SOURCES = ("jump_BR00117006", "pediatric_BR00143976", "nf1_plate2", "bbbc022")


def cp_same_field(corpus: Any, root: Path, rng: np.random.Generator, per_field: int = 12) -> Task:
    images: list[Sample] = []
    fields = []
    for source in CP_SOURCES:
        for r in _rows(corpus, source):
            s = load_sample(r, root)
            for t in _tiles(s.pixels, 128, per_field, rng):
                images.append(_sample(t, s.channels, id=f"{r['id']}#{len(images)}"))
                fields.append(str(r["id"]))
    return Task(
        "cp_same_field",
        "retrieval",
        images,
        np.array(fields),
        note="Cell Painting 128² tiles (3, 5, 6 channels); same-field retrieval",
        source=",".join(CP_SOURCES),
    )


def digits(rng: np.random.Generator, most: int = 600) -> Task:
    from sklearn.datasets import load_digits

    data = load_digits()
    pick = sorted(rng.choice(len(data.target), min(most, len(data.target)), replace=False))
    images = [_sample(np.kron(data.images[k], np.ones((4, 4)))[None].astype(np.float32),
                      ["unknown"], id=f"digit{k}") for k in pick]  # fmt: skip
    return Task(
        "digits",
        "classification",
        images,
        data.target[pick].astype(str),
        note="scikit-learn digits, 8² upsampled x4 to 32², 1 channel",
    )


BBBC021_CONDITIONS = ("DMSO", "cycloheximide_5uM", "cycloheximide_15uM", "cycloheximide_50uM")


def bbbc021_condition(shared: Path, rng: np.random.Generator, most: int | None = None) -> Task:
    """BBBC021 MCF-7 single-cell crops (DAPI, tubulin, actin): DMSO vs cycloheximide 5, 15 and
    50 µM. Train on the four train plates, test on the held-out plate (never mixed); the
    ``plate`` of each crop is its normalisation group. Not in any pretraining corpus."""
    folder = Path(shared) / "bbbc021_cycloheximide"
    index = folder / "index.csv"
    if not index.is_file():
        raise BadInputError(f"{index} is missing", "check ../shared/data/bbbc021_cycloheximide")
    import pandas as pd
    import tifffile

    df = pd.read_csv(index)
    if most is not None and most < len(df):
        df = df.iloc[np.sort(rng.choice(len(df), most, replace=False))]
    names = ["DAPI", "tubulin", "actin"]
    images = [_sample(tifffile.imread(folder / p), names, id=p, plate=pl)
              for p, pl in zip(df["path"], df["plate"], strict=True)]  # fmt: skip
    return Task("bbbc021_condition", "classification", images, df["condition"].to_numpy(str),
                groups=df["plate"].to_numpy(str), train=(df["split"] == "train").to_numpy(),
                note="BBBC021 68² crops, DMSO / cycloheximide 5, 15, 50 µM; train plates -> "
                     "held-out plate Week4_27821")  # fmt: skip


BUILDERS: dict[str, Callable[..., Task]] = {
    "dsb_modality": dsb_modality, "dsb_nuclei": dsb_nuclei, "ph3_mitosis": ph3_mitosis,
    "defocus": defocus, "cp_same_field": cp_same_field,
}  # fmt: skip
TASKS = ("bbbc021_condition", *BUILDERS, "digits")


def build_tasks(shared_data: str | Path, names: tuple[str, ...] = TASKS, seed: int = 0
                ) -> list[Task]:  # fmt: skip
    """The tasks ``names`` (all by default) from the real data folder ``shared_data``."""
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise BadInputError(f"unknown tasks {unknown}", f"use some of {', '.join(TASKS)}")
    root = Path(shared_data)
    corpus = shared_corpus_manifest(root) if set(names) & set(BUILDERS) else None
    out = []
    for name in names:
        rng = np.random.default_rng(seed)
        if name == "digits":
            task = digits(rng)
        elif name == "bbbc021_condition":
            task = bbbc021_condition(root, rng)
        else:
            task = BUILDERS[name](corpus, None, rng)
        log.info("task %s: %d images", name, len(task.images))
        out.append(task)
    return out
