"""A catalogue-based study for the stand-in IDR: screen, plates, wells, fields and pixels.

`build_study("idr0036", root)` takes the study's name and screen id from IDR's catalogue
(``idr_ids.tsv``), its plates, wells and per-well annotations (compound, dose, gene, control
type, ``Channels``) from the curated annotation file in ``metadata/<study>/screen*/``, and its
channel labels from the study's ``.screen`` file or the ``Channels`` column. Each field is
written as an NGFF 0.4 image at ``root/v0.4/<container>/<image id>.zarr`` (the layout of EBI's
``https://uk1s3.embassy.ebi.ac.uk/idr/zarr/v0.4/idr0062A/6001240.zarr``), with pixels cut from
the real BBBC022 Cell Painting site in ``../shared/data`` (which is an idr0036 field) when that
folder is present, else generated. Ids of plates, wells and images are the stand-in's own
(derived from the screen id); names, annotations and channel labels are IDR's.

Without the catalogue folders a built-in idr0036-like study of the same shape is used.
"""

from __future__ import annotations

import configparser
import csv
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biofm.core.errors import BadInputError
from biofm.idr._standin_data import OME, write_test_image


def find_shared() -> Path | None:
    """The read-only ``shared/`` folder beside the project (from the working directory or the
    source tree), or None."""
    for candidate in (Path.cwd().parent / "shared", Path(__file__).resolve().parents[4] / "shared"):
        if candidate.is_dir():
            return candidate
    return None


_BUILTIN_CHANNELS = ["ERSyto", "ERSytoBleed", "Hoechst", "Mito", "Ph_golgi"]
_BUILTIN_STAINS = (
    "Hoechst 33342:nucleus;concanavalin A AlexaFluor488:endoplasmic reticulum;"
    "SYTO 14:nucleoli;WGA AlexaFluor594:Golgi and plasma membrane;"
    "MitoTracker Deep Red:mitochondria"
)
_BUILTIN_COMPOUNDS = ["DMSO", "NIFLUMIC ACID", "Vitexin", "DMSO", "colchicine", "DMSO"]


@dataclass
class StudyImage:
    id: int
    name: str
    well_id: int
    plate_id: int
    field: int
    zarr: str  # path under the files root, e.g. "v0.4/idr0036A/195250001.zarr"
    shape: tuple[int, int, int]  # (C, Y, X)
    channels: list[str]


@dataclass
class StudyWell:
    id: int
    plate_id: int
    row: int
    column: int
    annotations: dict[str, str]
    images: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{string.ascii_uppercase[self.row]}{self.column + 1}"


@dataclass
class StudyPlate:
    id: int
    name: str
    rows: int
    columns: int
    wells: list[StudyWell] = field(default_factory=list)


@dataclass
class StandInStudy:
    """One screen of one study, as the stand-in serves it."""

    study: str  # e.g. "idr0036-gustafsdottir-cellpainting"
    screen_id: int
    screen_name: str  # e.g. "idr0036-gustafsdottir-cellpainting/screenA"
    description: str
    info: list[tuple[str, str]]  # study-level map annotation (ns idr.openmicroscopy.org/study/info)
    channels: list[str]
    plates: list[StudyPlate]
    images: dict[int, StudyImage] = field(default_factory=dict)
    wells: dict[int, StudyWell] = field(default_factory=dict)
    pixel_source: str = "generated"

    @property
    def container(self) -> str:
        """``idr0036A``: the study id and the screen letter, as in EBI's sample paths."""
        letter = self.screen_name.rsplit("screen", 1)[-1][:1].upper() or "A"
        return self.study[:7] + letter

    def screen_json(self, base: str) -> dict[str, Any]:
        sid = self.screen_id
        return {"@id": sid, "@type": OME + "Screen", "Name": self.screen_name,
                "Description": self.description, "omero:childCount": len(self.plates),
                "url:screen": f"{base}/api/v0/m/screens/{sid}/",
                "url:plates": f"{base}/api/v0/m/screens/{sid}/plates/"}  # fmt: skip

    def plate_json(self, plate: StudyPlate, base: str) -> dict[str, Any]:
        pid = plate.id
        return {"@id": pid, "@type": OME + "Plate", "Name": plate.name, "Rows": plate.rows,
                "Columns": plate.columns, "RowNamingConvention": "letter",
                "ColumnNamingConvention": "number", "ExternalIdentifier": plate.name,
                "url:plate": f"{base}/api/v0/m/plates/{pid}/",
                "url:wells": f"{base}/api/v0/m/plates/{pid}/wells/",
                "url:plateacquisitions": f"{base}/api/v0/m/plates/{pid}/plateacquisitions/",
                }  # fmt: skip

    def image_json(self, image: StudyImage, base: str, channels: bool = False) -> dict[str, Any]:
        c, y, x = image.shape
        size = {"@type": "TBD#LengthI", "Unit": "MICROMETER", "Symbol": "µm", "Value": 0.65}
        pixels: dict[str, Any] = {
            "@id": image.id, "@type": OME + "Pixels", "SizeX": x, "SizeY": y, "SizeZ": 1,
            "SizeC": c, "SizeT": 1, "PhysicalSizeX": size, "PhysicalSizeY": dict(size),
            "Type": {"@type": "TBD#PixelsType", "value": "uint16"}, "SignificantBits": 16,
        }  # fmt: skip
        if channels:
            pixels["Channels"] = [{"@id": image.id * 10 + i, "@type": OME + "Channel",
                                   "Name": n, "SamplesPerPixel": 1}
                                  for i, n in enumerate(image.channels)]  # fmt: skip
        return {"@id": image.id, "@type": OME + "Image", "Name": image.name,
                "url:image": f"{base}/api/v0/m/images/{image.id}/", "Pixels": pixels}  # fmt: skip

    def well_json(self, well: StudyWell, base: str, fields: list[int] | None) -> dict[str, Any]:
        samples = []
        for i, iid in enumerate(well.images):
            if fields is not None and i not in fields:
                continue
            img = self.images[iid]
            samples.append({"@id": iid, "@type": OME + "WellSample",
                            "Image": {"@id": iid, "@type": OME + "Image", "Name": img.name,
                                      "url:image": f"{base}/api/v0/m/images/{iid}/"}})  # fmt: skip
        return {"@id": well.id, "@type": OME + "Well", "Row": well.row, "Column": well.column,
                "url:well": f"{base}/api/v0/m/wells/{well.id}/", "WellSamples": samples,
                }  # fmt: skip

    def plate_grid(self, plate: StudyPlate, field: int) -> dict[str, Any]:
        """``/webgateway/plate/{id}/{field}/``: rows x columns of images (null: empty well)."""
        grid: list[list[Any]] = [[None] * plate.columns for _ in range(plate.rows)]
        sizes = []
        for well in plate.wells:
            if len(well.images) <= field:
                continue
            img = self.images[well.images[field]]
            grid[well.row][well.column] = {
                "type": "Image", "id": img.id, "name": img.name, "description": "",
                "author": "Public data", "date": 1252939626, "wellId": well.id,
                "field": field, "thumb_url": f"/webgateway/render_thumbnail/{img.id}/"}  # fmt: skip
            sizes.append({"x": img.shape[2], "y": img.shape[1], "image_id": img.id})
        return {"grid": grid, "collabels": [str(c + 1) for c in range(plate.columns)],
                "rowlabels": list(string.ascii_uppercase[: plate.rows]), "image_sizes": sizes}

    def img_data(self, image: StudyImage) -> dict[str, Any]:
        """``/webgateway/imgData/{id}/`` of a field (shape of IDR's recorded answer)."""
        c, y, x = image.shape
        window = {"min": 0.0, "max": 65535.0, "start": 0.0, "end": 4095.0}
        chans = [{"emissionWave": None, "label": n, "color": "FFFFFF", "inverted": False,
                  "family": "linear", "coefficient": 1.0, "window": dict(window), "active": True}
                 for n in image.channels]  # fmt: skip
        plate = next(p for p in self.plates if p.id == image.plate_id)
        return {"id": image.id,
                "meta": {"imageName": image.name, "imageId": image.id, "wellId": image.well_id,
                         "pixelsType": "uint16", "datasetId": None, "projectId": None,
                         "projectName": "Multiple", "datasetName": "Multiple",
                         "imageAuthor": "Public data", "plateName": plate.name},
                "perms": {"canAnnotate": False, "canEdit": False, "canDelete": False,
                          "canLink": False},
                "tiles": False, "size": {"width": x, "height": y, "z": 1, "t": 1, "c": c},
                "pixel_size": {"x": 0.65, "y": 0.65, "z": None}, "pixel_range": [0, 65535],
                "channels": chans,
                "rdefs": {"model": "greyscale", "projection": "normal", "defaultZ": 0,
                          "defaultT": 0, "invertAxis": False}}  # fmt: skip

    def table(self, well: StudyWell) -> dict[str, Any]:
        """The bulk-annotation table row of ``well`` (``/webgateway/table/.../query/``)."""
        plate = next(p for p in self.plates if p.id == well.plate_id)
        extra = {k: v for k, v in well.annotations.items() if k not in ("Plate", "Well")}
        columns = ["Plate", "Well", "Plate Name", "Well Name", *extra]
        row = [plate.id, well.id, plate.name, well.name, *extra.values()]
        types = ["PlateColumn", "WellColumn"] + ["StringColumn"] * (len(columns) - 2)
        return {"data": {"column_types": types, "columns": columns, "rows": [row]},
                "meta": {"rowCount": len(self.wells), "totalCount": 1, "limit": None,
                         "offset": 0},
                "id": self.screen_id * 7 + 1, "annId": self.screen_id * 7 + 2,
                "owner": "Public data", "addedBy": "Public data", "parentType": "Screen",
                "parentId": self.screen_id, "addedOn": 1502896910574}  # fmt: skip


# ---------------------------------------------------------------------------------- building
def _study_dirs(study: str, shared: Path | None) -> tuple[str, int, str, Path | None]:
    """(study name, screen id, screen name, metadata folder) from the catalogue."""
    if shared is not None and (shared / "idr" / "catalog" / "idr_ids.tsv").is_file():
        with (shared / "idr" / "catalog" / "idr_ids.tsv").open(newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                name = row.get("name") or ""
                if name.startswith(study) and row.get("category") == "Screen":
                    full = name.split("/")[0]
                    meta = shared / "idr" / "metadata" / full
                    return full, int(row["id"]), name, meta if meta.is_dir() else None
        raise BadInputError(
            f"no IDR screen named {study!r} in the catalogue",
            "use a screen study id such as idr0036 (see 'biofm idr studies')",
        )
    if not "idr0036-gustafsdottir-cellpainting".startswith(study):
        raise BadInputError(
            f"study {study!r} needs the IDR catalogue (../shared/idr)",
            "use idr0036, which has a built-in stand-in",
        )
    return (
        "idr0036-gustafsdottir-cellpainting",
        1952,
        "idr0036-gustafsdottir-cellpainting/screenA",
        None,
    )


def _annotation_rows(meta: Path | None) -> list[dict[str, str]]:
    """One dict per well from the study's curated annotation (library) file."""
    files = (
        sorted(meta.glob("screen*/*-library.txt")) + sorted(meta.glob("screen*/*-annotation.csv"))
        if meta is not None
        else []
    )
    if not files:
        return [{"Plate": f"plate{p}", "Well": f"{'ABCDEFGH'[w // 12]}{w % 12 + 1}",
                 "Compound Name": _BUILTIN_COMPOUNDS[w % len(_BUILTIN_COMPOUNDS)],
                 "Control Type": "negative control" if w % 3 == 0 else "",
                 "Channels": _BUILTIN_STAINS} for p in range(4) for w in range(96)]  # fmt: skip
    path = files[0]
    delimiter = "\t" if path.suffix == ".txt" else ","
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        return [
            {k: (v or "") for k, v in row.items() if k}
            for row in csv.DictReader(fh, delimiter=delimiter)
        ]


def _channel_names(meta: Path | None, rows: list[dict[str, str]]) -> list[str]:
    """Labels from the ``.screen`` file (what IDR's images carry), else the Channels column."""
    for screen in sorted(meta.glob("screens/*.screen")) if meta is not None else []:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        with screen.open(encoding="utf-8", errors="replace") as fh:
            head = "".join(line for _, line in zip(range(40), fh, strict=False))
        parser.read_string(head.split("Field_0")[0])
        for section in parser.sections():
            if parser.has_option(section, "ChannelNames"):
                return [c.strip() for c in parser.get(section, "ChannelNames").split(",")]
    text = next((r.get("Channels", "") for r in rows if r.get("Channels")), "")
    names = [part.split(":")[0].strip() for part in text.split(";") if part.strip()]
    return names or list(_BUILTIN_CHANNELS)


def _well_position(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"([A-Za-z]+)0*(\d+)", name.strip())
    if m is None:
        raise BadInputError(f"well name {name!r} is not like 'A1'", "fix the annotation file")
    return string.ascii_uppercase.index(m.group(1)[-1].upper()), int(m.group(2)) - 1


class _Pixels:
    """Fields cut from the real BBBC022 site (channels matched by name, else cycled)."""

    def __init__(self, shared: Path | None, channels: list[str]) -> None:
        folder = shared / "data" / "cellpainting_site_bbbc022" if shared is not None else None
        self.site: np.ndarray | None = None
        if folder is not None and folder.is_dir():
            import tifffile

            stack = {p.stem: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}
            names = sorted(stack)
            picked = [
                stack[c] if c in stack else stack[names[i % len(names)]]
                for i, c in enumerate(channels)
            ]
            self.site = np.stack(picked).astype(np.uint16)
        self.n_channels = len(channels)

    @property
    def source(self) -> str:
        return "bbbc022-site" if self.site is not None else "generated"

    def field(self, seed: int, size: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.site is not None:
            _, h, w = self.site.shape
            s = min(size, h, w)
            y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = self.site[:, y0 : y0 + s, x0 : x0 + s]
            return np.ascontiguousarray(crop[:, ::-1] if seed % 2 else crop)
        yy, xx = np.mgrid[0:size, 0:size]
        out = rng.normal(300, 20, (self.n_channels, size, size))
        for _ in range(12):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 10)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            out += blob[None] * rng.uniform(500, 3000, (self.n_channels, 1, 1))
        return np.clip(out, 0, 65535).astype(np.uint16)


def build_study(
    study: str, root: str | Path, *, plates: int = 1, wells: int = 8, fields: int = 2,
    size: int = 256, chunk: int = 128, use_shared: bool = True,
) -> StandInStudy:  # fmt: skip
    """Build ``plates`` x ``wells`` x ``fields`` fields of ``study`` (e.g. ``"idr0036"``),
    writing each as an OME-Zarr image of ``size`` x ``size`` pixels under ``root``.
    ``use_shared=False`` ignores ``../shared`` (built-in idr0036-like study, generated pixels)."""
    shared = find_shared() if use_shared else None
    name, screen_id, screen_name, meta = _study_dirs(study, shared)
    rows = _annotation_rows(meta)
    channels = _channel_names(meta, rows)
    pixels = _Pixels(shared, channels)
    info = [("Study Title", name), ("Sample Type", "cell"), ("Organism", "Homo sapiens"),
            ("Imaging Method", "fluorescence microscopy")]  # fmt: skip
    out = StandInStudy(
        name,
        screen_id,
        screen_name,
        f"{screen_name} (stand-in)",
        info,
        channels,
        [],
        pixel_source=pixels.source,
    )
    by_plate: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_plate.setdefault(row["Plate"], []).append(row)
    base = screen_id * 100_000
    for p, (plate_name, plate_rows) in enumerate(list(by_plate.items())[:plates]):
        plate = StudyPlate(base + p + 1, plate_name, 16, 24)
        out.plates.append(plate)
        for row in plate_rows[:wells]:
            r, c = _well_position(row["Well"])
            well = StudyWell(base + 1_000 + len(out.wells), plate.id, r, c, row)
            plate.wells.append(well)
            out.wells[well.id] = well
            for f in range(fields):
                iid = base + 50_000 + len(out.images)
                img = StudyImage(
                    iid,
                    f"{plate_name} [Well {well.name}, Field {f + 1}]",
                    well.id,
                    plate.id,
                    f,
                    f"v0.4/{out.container}/{iid}.zarr",
                    (len(channels), size, size),
                    channels,
                )
                field_pixels = pixels.field(iid, size)
                img.shape = (len(channels), *field_pixels.shape[1:])
                write_test_image(
                    Path(root) / img.zarr, field_pixels, "cyx", channels, (1, chunk, chunk)
                )
                well.images.append(iid)
                out.images[iid] = img
    return out
