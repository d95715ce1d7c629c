"""More stand-in IDR answers for added studies: map annotations, mapr and rendered regions.

- ``/webclient/api/annotations/?type=map&screen|plate|well|image=ID``: the study info on the
  screen, each well's annotation-file columns on the well and its images, split by namespace
  as IDR does (gene, compound, cell line, ... under ``openmicroscopy.org/mapr/*``, the rest
  under ``openmicroscopy.org/omero/bulk_annotations``); empty values are left out.
- ``/mapr/api/{menu}/?value=V[&case_sensitive=false]`` (screens),
  ``/mapr/api/{menu}/plates/?value=V&id=SCREEN`` and
  ``/mapr/api/{menu}/images/?value=V&node=plate&id=PLATE``, paged by ``page``/``limit``.
- ``/webgateway/render_image_region/{iid}/{z}/{t}/?region=x,y,w,h|tile=l,x,y[,w,h]&c=&m=&q=``:
  a JPEG rendered from the field's OME-Zarr pixels, each active channel windowed linearly to
  0..255 as OMERO does (``m=g``: the first active channel, in grey).
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from biofm.core.errors import MissingExtraError
from biofm.idr.mapr import BULK_NS, MENUS, STUDY_INFO_NS

if TYPE_CHECKING:
    from biofm.idr._standin_study import StandInStudy, StudyImage, StudyWell
    from biofm.idr.testing import StandInIDR

Answer = tuple[int, Any]
_CLASSES = {"screen": "ScreenI", "plate": "PlateI", "well": "WellI", "image": "ImageI"}
_PERMS = {"canDelete": False, "canAnnotate": False, "canLink": False, "canEdit": False}
_DATE = "2016-05-26T00:00:00Z"
_EXPERIMENTERS = [{"id": 2, "omeName": "public", "firstName": "Public", "lastName": "data"}]
_TOKEN = re.compile(r"(-?)(\d+)(?:\|(-?\d+(?:\.\d*)?):(-?\d+(?:\.\d*)?))?(?:\$([0-9A-Fa-f]{6}))?")


def map_key(column: str) -> str:
    """Annotation-file column -> map-annotation key (``Characteristics [Cell Line]`` ->
    ``Cell Line``), as IDR's import does."""
    found = re.fullmatch(r"Characteristics \[(.+)\]", column.strip())
    return found.group(1) if found else column.strip()


def _namespace(key: str) -> str:
    for menu in MENUS.values():
        if any(key == k or key.startswith(k + " ") for k in menu.keys):
            return menu.ns
    return BULK_NS


def _annotation(
    ann_id: int, ns: str, values: list[list[str]], kind: str, oid: int, name: str
) -> dict[str, Any]:
    parent = {"id": oid, "class": _CLASSES[kind], "name": name}
    link = {
        "id": ann_id * 3 + oid % 997,
        "owner": {"id": 2},
        "parent": parent,
        "date": _DATE,
        "permissions": dict(_PERMS),
    }
    return {
        "id": ann_id,
        "ns": ns,
        "name": None,
        "description": None,
        "owner": {"id": 2},
        "date": _DATE,
        "permissions": dict(_PERMS),
        "link": link,
        "class": "MapAnnotationI",
        "values": values,
    }


def _well_annotations(well: StudyWell, kind: str, oid: int, name: str) -> list[dict[str, Any]]:
    """The well's columns as map annotations, one per namespace (order of first appearance)."""
    groups: dict[str, list[list[str]]] = {}
    for column, value in well.annotations.items():
        key = map_key(column)
        if value.strip() and key not in ("Plate", "Well"):
            groups.setdefault(_namespace(key), []).append([key, value])
    return [
        _annotation(well.id * 10 + i, ns, values, kind, oid, name)
        for i, (ns, values) in enumerate(groups.items())
    ]


def _annotations(standin: StandInIDR, one: dict[str, str]) -> Answer | None:
    for kind in _CLASSES:
        if kind in one:
            break
    else:
        return None
    oid = int(one[kind]) if one[kind].isdigit() else -1
    for s in standin.studies:
        anns: list[dict[str, Any]] | None = None
        if kind == "screen" and s.screen_id == oid:
            values = [[k, v] for k, v in s.info]
            anns = [_annotation(oid * 10, STUDY_INFO_NS, values, kind, oid, s.screen_name)]
        elif kind == "plate" and any(p.id == oid for p in s.plates):
            anns = []
        elif kind == "well" and oid in s.wells:
            anns = _well_annotations(s.wells[oid], kind, oid, s.wells[oid].name)
        elif kind == "image" and oid in s.images:
            image = s.images[oid]
            anns = _well_annotations(s.wells[image.well_id], kind, oid, image.name)
        if anns is not None:
            if one.get("type", "map") != "map":
                anns = []
            return 200, {"annotations": anns, "experimenters": list(_EXPERIMENTERS)}
    return None


# ------------------------------------------------------------------------------------ mapr
def _matches(well: StudyWell, keys: tuple[str, ...], value: str, case_sensitive: bool) -> bool:
    for column, got in well.annotations.items():
        same = got == value or (not case_sensitive and got.lower() == value.lower())
        if same and map_key(column) in keys:
            return True
    return False


def _page(items: list[dict[str, Any]], one: dict[str, str]) -> list[dict[str, Any]]:
    page, size = max(1, int(one.get("page", 1))), max(1, int(one.get("limit", 500)))
    return items[(page - 1) * size : page * size]


def _hits(s: StandInStudy, keys: tuple[str, ...], one: dict[str, str]) -> list[StudyImage]:
    """Images of ``s`` whose well matches the query's ``value``, in plate/well/field order."""
    sensitive = one.get("case_sensitive", "true").lower() not in ("false", "0")
    wells = [w for p in s.plates for w in p.wells if _matches(w, keys, one["value"], sensitive)]
    return [s.images[i] for w in wells for i in w.images]


def _mapr(standin: StandInIDR, menu: str, rest: str, one: dict[str, str]) -> Answer | None:
    spec = MENUS.get(menu)
    if spec is None or not spec.keys:
        return None
    if not one.get("value"):
        return 400, {"message": "value argument required"}
    value, oid = one["value"], int(one.get("id", "-1")) if one.get("id", "").isdigit() else -1
    if rest == "":
        screens = []
        for s in standin.studies:
            hits = _hits(s, spec.keys, one)
            if hits:
                screens.append(
                    {
                        "id": s.screen_id,
                        "name": f"{s.screen_name} ({len(hits)})",
                        "ownerId": 2,
                        "childCount": len({i.plate_id for i in hits}),
                        "permsCss": "",
                        "extra": {"counter": len(hits), "value": value},
                    }
                )
        return 200, {"maps": [], "screens": _page(screens, one), "projects": []}
    for s in standin.studies:
        hits = _hits(s, spec.keys, one)
        if rest == "plates/" and s.screen_id == oid:
            plates = [
                {
                    "id": p.id,
                    "name": p.name,
                    "ownerId": 2,
                    "permsCss": "",
                    "childCount": sum(i.plate_id == p.id for i in hits),
                    "extra": {"node": "plate", "value": value},
                }
                for p in s.plates
                if any(i.plate_id == p.id for i in hits)
            ]
            return 200, {"plates": _page(plates, one)}
        if rest == "images/" and any(p.id == oid for p in s.plates):
            images = [
                {
                    "id": i.id,
                    "name": i.name,
                    "archived": False,
                    "ownerId": 2,
                    "permsCss": "",
                    "filesetId": i.id + 7,
                }
                for i in hits
                if i.plate_id == oid
            ]
            return 200, {"images": _page(images, one)}
    return None


# ---------------------------------------------------------------------------------- render
def _region(one: dict[str, str], width: int, height: int) -> tuple[int, int, int, int] | str:
    """(x, y, w, h) clipped to the image, or an error message."""
    try:
        if "region" in one:
            x, y, w, h = (int(float(v)) for v in one["region"].split(","))
        elif "tile" in one:
            parts = [int(v) for v in one["tile"].split(",")]
            tw, th = (parts[3], parts[4]) if len(parts) == 5 else (512, 512)
            x, y, w, h = parts[1] * tw, parts[2] * th, tw, th
        else:
            return "tile or region argument required"
    except ValueError:
        return "region must be x,y,w,h and tile level,x,y[,w,h] (integers)"
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return f"region {x},{y},{w},{h} lies outside the {width}x{height} image"
    return x0, y0, x1 - x0, y1 - y0


def _channels(c: str | None, defaults: list[dict[str, Any]]) -> list[tuple[int, float, float, str]]:
    """Active channels as (0-based index, start, end, RRGGBB); ``c`` as in OMERO's URLs."""
    if not c:
        return [
            (i, ch["window"]["start"], ch["window"]["end"], ch["color"])
            for i, ch in enumerate(defaults)
            if ch.get("active", True)
        ]
    out = []
    for token in c.split(","):
        found = _TOKEN.fullmatch(token.strip())
        if found is None or not 1 <= int(found.group(2)) <= len(defaults):
            raise ValueError(f"bad channel argument {token!r} (image has {len(defaults)})")
        if found.group(1) == "-":
            continue
        i = int(found.group(2)) - 1
        window = defaults[i]["window"]
        start = float(found.group(3)) if found.group(3) else window["start"]
        end = float(found.group(4)) if found.group(4) else window["end"]
        out.append((i, start, end, found.group(5) or defaults[i]["color"]))
    return out


def window_to_8bit(values: np.ndarray, start: float, end: float) -> np.ndarray:
    """Linear window ``[start, end]`` -> 0..255 (rounded, clipped), as OMERO renders."""
    span = end - start
    if span <= 0:
        return np.where(values >= end, 255, 0).astype(np.uint8)
    scaled = (values.astype(np.float64) - start) * (255.0 / span)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _render(standin: StandInIDR, iid: int, z: int, t: int, one: dict[str, str]) -> Answer | None:
    hit = next(((s, s.images[iid]) for s in standin.studies if iid in s.images), None)
    if hit is None or standin.files_root is None:
        return None
    study, image = hit
    meta = study.img_data(image)
    area = _region(one, meta["size"]["width"], meta["size"]["height"])
    if isinstance(area, str):
        return 400, {"message": area}
    if z != 0 or t != 0:
        return 400, {"message": f"z={z}, t={t} out of range (the image has one plane)"}
    try:
        active = _channels(one.get("c"), meta["channels"])
    except ValueError as err:
        return 400, {"message": str(err)}
    model = one.get("m") or ("g" if meta["rdefs"]["model"] == "greyscale" else "c")
    x, y, w, h = area
    pixels: Any = zarr.open_group(str(standin.files_root / image.zarr), mode="r")["0"]
    if model == "g":
        active = active[:1]
    planes = [
        window_to_8bit(np.asarray(pixels[i, y : y + h, x : x + w]), s, e) for i, s, e, _ in active
    ]
    if model == "g":
        out = planes[0] if planes else np.zeros((h, w), np.uint8)
    else:
        rgb = np.zeros((h, w, 3), np.float64)
        for plane, (*_, color) in zip(planes, active, strict=True):
            rgb += plane[..., None] * (np.frombuffer(bytes.fromhex(color), np.uint8) / 255.0)
        out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    quality = float(one.get("q", 0.9))
    return 200, encode_jpeg(out, max(1, min(100, round(quality * 100))))


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """(h, w) grey or (h, w, 3) RGB uint8 -> JPEG bytes at ``quality`` (1..100)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise MissingExtraError("pillow", "idr") from exc
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def route_extra(standin: StandInIDR, path: str, one: dict[str, str]) -> Answer | None:
    """Annotations, mapr and rendered regions for ``standin.studies``; None for anything else."""
    if path == "/webclient/api/annotations/":
        return _annotations(standin, one)
    if found := re.fullmatch(r"/mapr/api/(\w+)/((?:plates|images)/)?", path):
        return _mapr(standin, found.group(1), found.group(2) or "", one)
    if found := re.fullmatch(r"/webgateway/render_image_region/(\d+)/(\d+)/(\d+)/", path):
        iid, z, t = (int(v) for v in found.groups())
        return _render(standin, iid, z, t, one)
    return None
