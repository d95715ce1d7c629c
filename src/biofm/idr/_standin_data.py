"""Data behind the stand-in IDR server: built-in JSON examples and OME-Zarr test stores.

`write_test_plate` writes an NGFF 0.4 HCS plate on Zarr v2 and `write_test_image` an NGFF
image on Zarr v2 (0.4) or v3 (0.5), from real microscopy images when given, with chunks
smaller than the image so that a crop touches only some of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biofm.io.ome_zarr import write_ome_zarr

OME = "http://www.openmicroscopy.org/Schemas/OME/2016-06#"


def builtin_img_data(image_id: int) -> dict[str, Any]:
    labels = ["DAPI", "FITC-FilterWheel", "TRITC-FilterWheel"]
    window = {"min": 250.0, "max": 4095.0, "start": 250.0, "end": 4095.0}
    channels = [
        {"emissionWave": None, "label": lab, "color": col, "inverted": False, "family": "linear",
         "coefficient": 1.0, "window": dict(window), "active": True}
        for lab, col in zip(labels, ["FF0000", "00FF00", "0000FF"], strict=True)
    ]  # fmt: skip
    return {
        "id": image_id,
        "meta": {"imageName": f"image {image_id}", "imageId": image_id, "wellId": 45217,
                 "pixelsType": "uint16", "datasetId": None, "projectId": None},
        "perms": {"canAnnotate": False, "canEdit": False, "canDelete": False, "canLink": False},
        "tiles": False, "size": {"width": 696, "height": 520, "z": 1, "t": 1, "c": 3},
        "pixel_size": {"x": 1.25195005, "y": 1.25195005, "z": None},
        "pixel_range": [0, 65535], "channels": channels,
        "rdefs": {"model": "color", "projection": "normal", "defaultZ": 0, "defaultT": 0,
                  "invertAxis": False},
    }  # fmt: skip


def builtin_table(well_id: int) -> dict[str, Any]:
    columns = ["Plate", "Well", "Gene Symbol", "Channels", "Plate Name", "Well Name"]
    row = [340, well_id, "ECT2", "DAPI:DNA;FITC-FilterWheel:alpha-tubulin;"
           "TIRTC-FilterWheel:phallodin/F-actin", "Plate8_Actinome1", "o2"]  # fmt: skip
    return {
        "data": {"column_types": ["PlateColumn", "WellColumn"] + ["StringColumn"] * 4,
                 "columns": columns, "rows": [row]},
        "meta": {"rowCount": 4224, "totalCount": 1, "limit": None, "offset": 0},
        "id": 15026339, "annId": 8368945, "owner": "Public data", "addedBy": "Public data",
        "parentType": "Screen", "parentId": 206, "addedOn": 1502896910574,
    }  # fmt: skip


def screen_item(sid: int, name: str, base: str) -> dict[str, Any]:
    return {"@id": sid, "@type": OME + "Screen", "Name": name, "Description": f"{name} screen",
            "url:screen": f"{base}/api/v0/m/screens/{sid}/",
            "url:plates": f"{base}/api/v0/m/screens/{sid}/plates/"}  # fmt: skip


def page_of(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    offset = max(0, int(query.get("offset", 0)))
    limit = int(query.get("limit", 200))
    limit = 200 if limit < 0 else min(limit, 1000)
    meta = {"offset": offset, "limit": limit, "maxLimit": 1000, "totalCount": len(items)}
    return {"data": items[offset : offset + limit], "meta": meta}


write_test_image = write_ome_zarr
"""The stand-in writes its images with the public writer (`biofm.io.ome_zarr.write_ome_zarr`)."""


def write_test_plate(
    path: str | Path,
    wells: Mapping[str, Sequence[np.ndarray]],
    channel_names: Sequence[str],
    chunks: Sequence[int],
    name: str = "test-plate",
) -> Path:
    """Write an NGFF 0.4 HCS plate on Zarr v2. ``wells`` maps ``"A/1"`` to its fields, each
    (C, Y, X); fields are written as images ``A/1/0``, ``A/1/1``, ... with axes ``c,y,x``."""
    import zarr

    plate = zarr.open_group(str(path), mode="w", zarr_format=2)
    rows = sorted({w.split("/")[0] for w in wells})
    cols = sorted({w.split("/")[1] for w in wells}, key=int)
    items: list[Any] = [{"path": w, "rowIndex": rows.index(w.split("/")[0]),
              "columnIndex": cols.index(w.split("/")[1])} for w in wells]  # fmt: skip
    count = max(len(f) for f in wells.values())
    plate.attrs["plate"] = {
        "name": name, "version": "0.4", "field_count": count,
        "rows": [{"name": r} for r in rows], "columns": [{"name": c} for c in cols],
        "wells": items, "acquisitions": [{"id": 0, "name": "run 1", "maximumfieldcount": count}],
    }  # fmt: skip
    for well, fields in wells.items():
        row, col = well.split("/")
        group = plate.require_group(row).require_group(col)
        images: list[Any] = [{"path": str(i), "acquisition": 0} for i in range(len(fields))]
        group.attrs["well"] = {"images": images, "version": "0.4"}
        for i, pixels in enumerate(fields):
            write_test_image(Path(path) / well / str(i), pixels, "cyx", channel_names, chunks)
    return Path(path)
