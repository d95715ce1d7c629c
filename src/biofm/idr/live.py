"""The IDR study catalogue built from the live API instead of IDR's catalogue files.

One row per screen, with the columns of `biofm.idr.catalog.Catalog.table`, so ``filter`` and
``to_records`` work the same. Per screen it reads:

- name and plate count: ``/api/v0/m/screens/?childCount=true`` (paged);
- licence, organism, sample type, imaging method: the screen's study map annotation
  (``/webclient/api/annotations/?type=map&screen=ID``, ns ``idr.openmicroscopy.org/study/info``);
- C, X, Y, Z, T: ``imgData`` of the first image of the first plate
  (``/api/v0/m/screens/{id}/plates/`` then ``/api/v0/m/plates/{id}/wellsampleindex/0/wells/``);
- wells and images: counted on the first plate (``limit=0`` counts, one per field index) and
  multiplied by the number of plates, unless ``exact_counts=True`` counts every plate.
  ``counts_exact`` says which.

Screens are read concurrently (8 threads; the client caps requests in flight). A screen whose
requests fail keeps its name with the other values missing, and a warning is logged. Projects
(IDR's non-screen studies) are not listed yet.

    >>> with IDRClient() as client:                                      # doctest: +SKIP
    ...     live_catalog(client).filter(min_channels=5, organism="homo").table
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from biofm.idr.catalog import Catalog
from biofm.idr.http import IDRClient, IDRError
from biofm.idr.mapr import STUDY_INFO_NS, annotation_values, map_annotations

log = logging.getLogger(__name__)
COLUMNS = [
    "study",
    "study_id",
    "container",
    "kind",
    "introduced",
    "internal_id",
    "sets",
    "wells",
    "images",
    "planes",
    "size_tb",
    "size_bytes",
    "files",
    "sample_type",
    "x",
    "y",
    "z",
    "c",
    "t",
    "license",
    "organism",
    "imaging_method",
    "n_channel_labels",
    "counts_exact",
]
_INTS = (
    "internal_id",
    "sets",
    "wells",
    "images",
    "planes",
    "size_bytes",
    "files",
    "n_channel_labels",
)
_INFO = {
    "Sample Type": "sample_type",
    "Organism": "organism",
    "Imaging Method": "imaging_method",
    "License": "license",
}


def _names(name: str) -> dict[str, Any]:
    """``idr0036-gustafsdottir-cellpainting/screenA`` -> study, study_id, container, kind."""
    study, _, container = name.partition("/")
    sid = re.match(r"(idr\d{4})", study)
    kind = re.match(r"(screen|experiment)", container)
    return {
        "study": study,
        "study_id": sid.group(1) if sid else None,
        "container": container,
        "kind": kind.group(1) if kind else "screen",
    }


def _count(client: IDRClient, path: str) -> int:
    """``meta.totalCount`` of an ``/api/v0/m/`` list without fetching items."""
    return int(client.get_json(path, {"limit": 0})["meta"]["totalCount"])


def _plate_counts(client: IDRClient, plate_id: int) -> tuple[int, int]:
    """(wells, images) of one plate: one count per field index (``omero:wellsampleIndex``)."""
    plate = client.get_json(f"/api/v0/m/plates/{plate_id}/")["data"]
    lo, hi = plate.get("omero:wellsampleIndex", [0, 0])
    base = f"/api/v0/m/plates/{plate_id}"
    images = sum(_count(client, f"{base}/wellsampleindex/{k}/wells/") for k in range(lo, hi + 1))
    return _count(client, f"{base}/wells/"), images


def _dims(client: IDRClient, plate_id: int) -> dict[str, Any]:
    """C, X, Y, Z, T and channel-label count from the plate's first image."""
    path = f"/api/v0/m/plates/{plate_id}/wellsampleindex/0/wells/"
    wells = client.get_json(path, {"limit": 1})["data"]
    if not wells or not wells[0].get("WellSamples"):
        return {}
    meta = client.img_data(int(wells[0]["WellSamples"][0]["Image"]["@id"]))
    size = meta.get("size", {})
    labels = {str(c.get("label")) for c in meta.get("channels", [])}
    return {
        "x": size.get("width"),
        "y": size.get("height"),
        "z": size.get("z"),
        "c": size.get("c"),
        "t": size.get("t"),
        "n_channel_labels": len(labels),
    }


def _study_info(client: IDRClient, screen_id: int) -> dict[str, Any]:
    anns = map_annotations(client, screen=screen_id)
    out: dict[str, Any] = {}
    for key, value in annotation_values(anns, STUDY_INFO_NS):
        if key in _INFO and _INFO[key] not in out:
            out[_INFO[key]] = re.sub(r"\s+https?://\S+$", "", value.strip())
    return out


def screen_row(client: IDRClient, screen: dict[str, Any], exact_counts: bool = False) -> dict:
    """One catalogue row for a screen item of ``/api/v0/m/screens/``."""
    sid = int(screen["@id"])
    row: dict[str, Any] = {
        **_names(str(screen.get("Name", ""))),
        "internal_id": sid,
        "sets": screen.get("omero:childCount"),
    }
    try:
        row.update(_study_info(client, sid))
        plates = [int(p["@id"]) for p in client.paged(f"/api/v0/m/screens/{sid}/plates/")]
        row["sets"] = len(plates)
        if plates:
            row.update(_dims(client, plates[0]))
            counted = plates if exact_counts else plates[:1]
            counts = [_plate_counts(client, p) for p in counted]
            wells, images = sum(c[0] for c in counts), sum(c[1] for c in counts)
            scale = len(plates) / len(counted)
            row.update(
                wells=round(wells * scale),
                images=round(images * scale),
                counts_exact=len(counted) == len(plates),
            )
            if pd.notna(row.get("c")):
                row["planes"] = row["images"] * row["c"] * row["z"] * row["t"]
    except IDRError as err:
        log.warning("IDR screen %s (%s): %s; its row is incomplete", sid, row["study"], err)
    return row


def live_studies(
    client: IDRClient, max_screens: int | None = None, exact_counts: bool = False, threads: int = 8
) -> pd.DataFrame:
    """One row per IDR screen (columns of `Catalog.table`; unknown values NaN or "")."""
    screens = []
    for item in client.paged("/api/v0/m/screens/", {"childCount": "true"}):
        screens.append(item)
        if max_screens is not None and len(screens) >= max_screens:
            break
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        rows = list(pool.map(lambda s: screen_row(client, s, exact_counts), screens))
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in _INTS:
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    for col in ("size_tb", "x", "y", "z", "c", "t"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("introduced", "sample_type", "license", "organism", "imaging_method"):
        table[col] = table[col].astype(object).where(table[col].notna(), "").astype(str)
    table["counts_exact"] = table["counts_exact"].astype("boolean")
    return table


def live_catalog(
    client: IDRClient, max_screens: int | None = None, exact_counts: bool = False
) -> Catalog:
    """`live_studies` as a `Catalog` (``filter``, ``to_records``). Its ``root`` is a
    placeholder naming the server and holds no side tables, so ``show`` has no plates or
    channels to read."""
    table = live_studies(client, max_screens=max_screens, exact_counts=exact_counts)
    return Catalog(table, Path(f"live:{client.base_url}"), None)
