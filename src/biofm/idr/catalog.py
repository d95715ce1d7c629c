"""Offline IDR study catalogue, read from IDR's own catalogue files.

The catalogue folder holds ``idr_studies.tsv`` (one row per screen/experiment container) and
side tables (``screen_details.tsv``, ``channel_count_per_screen.tsv``,
``plate_details_per_screen.tsv``, ``idr_download_urls.tsv``). Curated study annotations
(``<study>/idrNNNN-study.txt``) are read from a sibling ``metadata/`` folder when present.
Nothing here touches the network.

    >>> cat = load_catalog("../shared/idr/catalog")          # doctest: +SKIP
    >>> cat.filter(min_channels=5, sample_type="cell").table  # doctest: +SKIP
    >>> cat.show("idr0036")["annotations"]["license"]         # doctest: +SKIP
"""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biofm.core.errors import BadInputError

ENV_VAR = "BIOFM_IDR_CATALOG"
STUDIES_FILE = "idr_studies.tsv"
_STUDY_COLUMNS = {
    "Study": "study", "Container": "container", "Introduced": "introduced",
    "Internal ID": "internal_id", "Sets": "sets", "Wells": "wells", "5D Images": "images",
    "Planes": "planes", "Size (TB)": "size_tb", "Size": "size_bytes", "# of Files": "files",
    "Sample Type": "sample_type",
}
_DIMS = ("x", "y", "z", "c", "t")
# study.txt keys -> annotation names (study level)
_STUDY_KEYS = {
    "Study Title": "title", "Study Type": "study_type", "Study Organism": "organism",
    "Study License": "license", "Study License URL": "license_url",
    "Study Copyright": "copyright", "Study DOI": "publication_doi",
    "Study Publication Title": "publication_title", "Study PubMed ID": "pubmed_id",
    "Study Public Release Date": "release_date", "Study External URL": "external_url",
}
_CONTAINER_NAME_KEYS = ("Comment[IDR Screen Name]", "Comment[IDR Experiment Name]")
_CONTAINER_KEYS = {
    "Screen Imaging Method": "imaging_method", "Experiment Imaging Method": "imaging_method",
    "Screen Sample Type": "sample_type", "Screen Type": "screen_type",
    "Screen Technology Type": "technology",
}


def resolve_catalog_dir(path: str | Path | None = None) -> Path:
    """The catalogue folder: ``path``, else ``$BIOFM_IDR_CATALOG``, else ../shared/idr/catalog."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        default = Path.cwd().parent / "shared" / "idr" / "catalog"
        if not default.is_dir():
            raise BadInputError(
                "no IDR catalogue folder given and none found at ../shared/idr/catalog",
                f"pass --catalog DIR (a folder with {STUDIES_FILE}) or set {ENV_VAR}=DIR",
            )
        path = default
    root = Path(path).expanduser()
    if not (root / STUDIES_FILE).is_file():
        raise BadInputError(
            f"{root} has no {STUDIES_FILE}",
            f"point --catalog (or {ENV_VAR}) at the folder holding IDR's {STUDIES_FILE}",
        )
    return root


def _read_tsv(path: Path, **kw: Any) -> pd.DataFrame:
    """Read a TSV (tolerating CRLF endings and trailing empty columns); empty when absent."""
    if not path.is_file():
        return pd.DataFrame()
    df = pd.read_csv(path, sep="\t", **kw)
    df.columns = [str(c).strip() for c in df.columns]
    keep = [c for c in df.columns if c and not c.startswith("Unnamed")]
    return df[keep]


def parse_dims(text: pd.Series) -> pd.DataFrame:
    """``"696 x 520 x 1 x 5 x 1"`` -> float columns x, y, z, c, t (averages; NaN if unparsable)."""
    number = r"(\d+(?:\.\d+)?)"
    parts = text.astype("string").str.extract(r"^\s*" + r"\s*x\s*".join([number] * 5) + r"\s*$")
    parts.columns = list(_DIMS)
    return parts.astype(float)


def read_study_annotations(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Parse an IDR ``*-study.txt`` into study-level and per-container annotations."""
    study: dict[str, str] = {}
    containers: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            cells = [c.strip() for c in row if c.strip()]
            if len(cells) < 2:
                continue
            key, value = cells[0], cells[1]
            if key in _CONTAINER_NAME_KEYS:
                current = containers.setdefault(value.split("/")[-1], {})
            elif key in _STUDY_KEYS:
                study.setdefault(_STUDY_KEYS[key], value)
            elif key in _CONTAINER_KEYS and current is not None:
                current.setdefault(_CONTAINER_KEYS[key], value)
    return study, containers


def _metadata_annotations(metadata_dir: Path | None) -> pd.DataFrame:
    """One row per (study_id, container) with licence, organism, imaging method from study.txt."""
    rows: list[dict[str, str]] = []
    for path in sorted(metadata_dir.glob("*/*-study.txt")) if metadata_dir else []:
        study, containers = read_study_annotations(path)
        study_id = path.name.split("-")[0]
        for container, extra in (containers or {"": {}}).items():
            rows.append({"study_id": study_id, "container": container,
                         "license": study.get("license", ""),
                         "organism": study.get("organism", ""),
                         "imaging_method": extra.get("imaging_method", "")})
    return pd.DataFrame(rows, columns=["study_id", "container", "license", "organism",
                                       "imaging_method"])


def _screen_annotations(root: Path) -> pd.DataFrame:
    """Licence / organism / imaging method per screen from ``screen_details.tsv``."""
    details = _read_tsv(root / "screen_details.tsv")
    if details.empty:
        return pd.DataFrame(columns=["study", "container", "license", "organism",
                                     "imaging_method"])
    names = details["idr_name"].astype(str).str.split("/", n=1, expand=True)
    licence = details["License"].astype(str).str.replace(r"\s+https?://\S+$", "", regex=True)
    return pd.DataFrame({"study": names[0], "container": names[1], "license": licence,
                         "organism": details["Organism"],
                         "imaging_method": details["Imaging Method"]})


def _channel_labels(root: Path) -> pd.DataFrame:
    """Distinct channel labels per container from ``channel_count_per_screen.tsv``."""
    counts = _read_tsv(root / "channel_count_per_screen.tsv")
    if counts.empty:
        return pd.DataFrame(columns=["study", "container", "n_channel_labels"])
    names = counts["idr_name"].astype(str).str.split("/", n=1, expand=True)
    counts = counts.assign(study=names[0], container=names[1])
    grouped = counts.groupby(["study", "container"])["channel"].nunique()
    return grouped.rename("n_channel_labels").reset_index()


def _fill(table: pd.DataFrame, extra: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """Fill table's empty licence/organism/imaging method columns from ``extra`` rows."""
    merged = table.merge(extra.drop_duplicates(on), on=on, how="left", suffixes=("", "_new"))
    for col in ("license", "organism", "imaging_method"):
        new = merged.pop(f"{col}_new").fillna("").astype(str)
        merged[col] = merged[col].where(merged[col] != "", new)
    return merged


def _clean_studies(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename and type the columns of ``idr_studies.tsv``."""
    df = raw.rename(columns=_STUDY_COLUMNS)[list(_STUDY_COLUMNS.values())].copy()
    df.insert(1, "study_id", df["study"].str.extract(r"^(idr\d{4})", expand=False))
    df.insert(3, "kind", df["container"].str.extract(r"^(screen|experiment)", expand=False))
    for col in ("internal_id", "sets", "wells", "images", "planes", "size_bytes", "files"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["size_tb"] = pd.to_numeric(df["size_tb"], errors="coerce")
    dims = parse_dims(raw["Avg. Image Dim (XYZCT)"])
    df = pd.concat([df, dims], axis=1)
    df["sample_type"] = df["sample_type"].fillna("").astype(str)
    for col in ("license", "organism", "imaging_method"):
        df[col] = ""
    return df


def load_catalog(path: str | Path | None = None, metadata_dir: str | Path | None = None) -> Catalog:
    """Load the catalogue from ``path`` (see :func:`resolve_catalog_dir`) into a :class:`Catalog`.

    ``metadata_dir`` defaults to the ``metadata/`` folder beside the catalogue folder.
    """
    root = resolve_catalog_dir(path)
    meta = Path(metadata_dir) if metadata_dir else root.parent / "metadata"
    meta_dir = meta if meta.is_dir() else None
    table = _clean_studies(_read_tsv(root / STUDIES_FILE))
    annotations = _metadata_annotations(meta_dir)
    table = _fill(table, annotations, ["study_id", "container"])
    table = _fill(table, annotations[annotations["container"] == ""].drop(columns="container")
                  .assign(imaging_method=""), ["study_id"])
    table = _fill(table, _screen_annotations(root), ["study", "container"])
    table = table.merge(_channel_labels(root), on=["study", "container"], how="left")
    table["n_channel_labels"] = table["n_channel_labels"].astype("Int64")
    return Catalog(table.reset_index(drop=True), root, meta_dir)


def _contains(series: pd.Series, text: str) -> pd.Series:
    return series.fillna("").astype(str).str.contains(text, case=False, regex=False)


@dataclass(frozen=True)
class Catalog:
    """IDR containers (one row each) plus the folders the side tables are read from."""

    table: pd.DataFrame
    root: Path
    metadata_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.table)

    def filter(self, study: str | None = None, sample_type: str | None = None,
               imaging_method: str | None = None, organism: str | None = None,
               min_channels: int | None = None, max_channels: int | None = None,
               min_images: int | None = None, max_size_tb: float | None = None,
               kind: str | None = None) -> Catalog:
        """Rows matching all given criteria (text: case-insensitive substring)."""
        df = self.table
        keep = pd.Series(True, index=df.index)
        for col, text in (("study", study), ("sample_type", sample_type), ("kind", kind),
                          ("imaging_method", imaging_method), ("organism", organism)):
            if text:
                keep &= _contains(df[col], text)
        for col, low, high in (("c", min_channels, max_channels), ("images", min_images, None),
                               ("size_tb", None, max_size_tb)):
            values = pd.to_numeric(df[col], errors="coerce")
            if low is not None:
                keep &= (values >= low).fillna(False).astype(bool)
            if high is not None:
                keep &= (values <= high).fillna(False).astype(bool)
        return Catalog(df[keep].reset_index(drop=True), self.root, self.metadata_dir)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts (missing values as ``None``)."""
        return _records(self.table)

    def resolve_study(self, study_id: str) -> str:
        """``"idr0036"`` or a full study name -> ``"idr0036"``; unknown ids name close matches."""
        key = study_id.strip().lower()
        ids = set(self.table["study_id"].dropna())
        by_name = dict(zip(self.table["study"], self.table["study_id"], strict=True))
        if key in ids or key in by_name:
            return key if key in ids else str(by_name[key])
        close = difflib.get_close_matches(key, sorted(ids | set(by_name)), n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(close)}?" if close
                else "run `biofm idr studies` to list study ids")
        raise BadInputError(f"no IDR study {study_id!r} in the catalogue", hint)

    def show(self, study_id: str, max_plates: int = 10) -> dict[str, Any]:
        """One study: containers, screens, plates, channels, annotations, download URLs."""
        sid = self.resolve_study(study_id)
        rows = self.table[self.table["study_id"] == sid]
        study = str(rows["study"].iloc[0])
        return {
            "study": study, "study_id": sid,
            "containers": _records(rows),
            "screens": _screens(self.root, study),
            "plates": _plates(self.root, self.metadata_dir, study, max_plates),
            "channels": _channels(self.root, study),
            "annotations": _annotations(self.metadata_dir, sid),
            "downloads": _records(_read_tsv(self.root / "idr_download_urls.tsv", dtype=str)
                                  .query("idrid == @sid")) if sid else [],
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame -> list of plain dicts with ``None`` for missing values."""
    if df.empty:
        return []
    clean = df.astype(object).where(df.notna(), None)
    return [{str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in clean.to_dict(orient="records")]


def _screens(root: Path, study: str) -> list[dict[str, Any]]:
    """Rows of ``screen_details.tsv`` for this study (selected columns)."""
    details = _read_tsv(root / "screen_details.tsv", dtype=str)
    if details.empty:
        return []
    cols = ["screen_id", "idr_name", "Study Title", "Screen Type", "Screen Technology Type",
            "Imaging Method", "Organism", "License", "Data DOI"]
    rows = details[details["idr_name"].str.startswith(study + "/")]
    return _records(rows[[c for c in cols if c in rows.columns]])


def _channels(root: Path, study: str) -> dict[str, list[str]]:
    """Container -> channel labels from ``channel_count_per_screen.tsv``."""
    counts = _read_tsv(root / "channel_count_per_screen.tsv", dtype=str)
    if counts.empty:
        return {}
    rows = counts[counts["idr_name"].str.startswith(study + "/")]
    return {str(name).split("/", 1)[1]: sorted(group["channel"].str.strip())
            for name, group in rows.groupby("idr_name")}


def _plates(root: Path, metadata_dir: Path | None, study: str, limit: int) -> dict[str, Any]:
    """Plates per screen from ``plate_details_per_screen.tsv``, else from the metadata library."""
    details = _read_tsv(root / "plate_details_per_screen.tsv", dtype=str)
    screens = _read_tsv(root / "screen_details.tsv", dtype=str)
    out: dict[str, Any] = {}
    if not details.empty and not screens.empty:
        ids = screens[screens["idr_name"].str.startswith(study + "/")]
        for screen_id, name in zip(ids["screen_id"], ids["idr_name"], strict=True):
            rows = details[details["screen_id"] == screen_id]
            if not rows.empty:
                out[name.split("/", 1)[1]] = _plate_summary(
                    rows, "plate_name", limit, "plate_details_per_screen.tsv")
    if not out and metadata_dir is not None:
        for path in sorted(metadata_dir.glob(f"{study}/*/{study.split('-')[0]}-*-*.*")):
            sep = "," if path.suffix == ".csv" else "\t"
            rows = pd.read_csv(path, sep=sep, dtype=str,
                               usecols=lambda c: c in ("Plate", "Channels"))
            out[path.parent.name] = _plate_summary(rows, "Plate", limit, path.name)
    return out


def _plate_summary(rows: pd.DataFrame, col: str, limit: int, source: str) -> dict[str, Any]:
    """Plate count, the first ``limit`` plates with their row counts, and channel strings."""
    sizes = rows.groupby(col, sort=False).size()
    ids: dict[Any, Any] = (rows.groupby(col, sort=False)["plate_id"].first().to_dict()
                           if "plate_id" in rows else {})
    plates = [{"name": str(n), "id": ids.get(n), "rows": int(k)}
              for n, k in list(sizes.items())[:limit]]
    chan_col = "channels" if "channels" in rows else "Channels"
    channels = sorted(rows[chan_col].dropna().unique()) if chan_col in rows else []
    return {"count": len(sizes), "plates": plates, "channel_strings": channels,
            "source": source}


def _annotations(metadata_dir: Path | None, study_id: str) -> dict[str, Any]:
    """Study-level annotations from ``metadata/<study>/<id>-study.txt`` (empty when absent)."""
    if metadata_dir is None:
        return {}
    for path in metadata_dir.glob(f"*/{study_id}-study.txt"):
        study, containers = read_study_annotations(path)
        return {**study, "containers": containers}
    return {}
