"""``biofm idr fetch``: mirror the fields an ``idr:`` query selects to local OME-Zarr.

Writes ``OUT/images/<image id>.zarr`` (NGFF 0.4, raw dtype, two levels) for every field and
``OUT/manifest.csv`` (a biofm manifest: ``id``, ``paths``, plus plate, well, field, image id
and the well's IDR annotations), so ``biofm train --data OUT/manifest.csv`` trains on the
mirror. Each image is written to a temporary folder and renamed into place, so a killed fetch
leaves only complete images, and running it again fetches only what is missing. Fields that
cannot be read are listed in ``OUT/failed.csv`` with the reason; the others are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biofm.core.errors import BadInputError, BiofmError
from biofm.idr.http import IDRClient
from biofm.idr.query import IDRFieldLoader, IDRQuery, resolve_fields
from biofm.io.manifest import write_manifest
from biofm.io.ome_zarr import write_ome_zarr

log = logging.getLogger(__name__)
_ERRORS = (BiofmError, OSError, ValueError)


@dataclass(frozen=True)
class FetchReport:
    manifest: Path
    fields: int  # selected by the query
    fetched: int  # written by this call
    present: int  # already there from an earlier call
    failed: list[tuple[str, str]]  # (field id, reason)


def _image_dir(out: Path, row: dict[str, Any]) -> Path:
    return out / "images" / f"{int(row['image_id'])}.zarr"


def _complete(folder: Path) -> bool:
    return (folder / ".zattrs").is_file() and (folder / "0" / ".zarray").is_file()


def _write(loader: IDRFieldLoader, out: Path, row: dict[str, Any]) -> str:
    """Fetch one field and write it atomically; returns its pixel source."""
    sample = loader(row)
    final = _image_dir(out, row)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _, h, w = sample.pixels.shape
    chunk = (1, min(h, 1024), min(w, 1024))
    write_ome_zarr(tmp, sample.pixels, "cyx", sample.channels, chunk,
                   pixel_size_um=sample.pixel_size_um or 1.0, levels=2)  # fmt: skip
    attrs = json.loads((tmp / ".zattrs").read_text())
    source = str(sample.meta.get("pixel_source", "ome-zarr"))
    attrs["biofm"] = {"idr_image_id": int(row["image_id"]), "pixel_source": source,
                      "bit_depth": int(sample.meta.get("bit_depth", 16))}  # fmt: skip
    (tmp / ".zattrs").write_text(json.dumps(attrs))
    if final.exists():  # an incomplete image from a killed run
        shutil.rmtree(final)
    os.replace(tmp, final)
    return source


def _source_of(folder: Path) -> str:
    attrs = json.loads((folder / ".zattrs").read_text())
    return str(attrs.get("biofm", {}).get("pixel_source", "ome-zarr"))


def fetch(q: IDRQuery, out: str | Path, workers: int = 8, client: IDRClient | None = None
          ) -> FetchReport:  # fmt: skip
    """Mirror the fields of ``q`` into ``out`` (see the module docstring)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} is a file", "pass a folder for --out")
    (out / "images").mkdir(parents=True, exist_ok=True)
    if client is None:
        with IDRClient(q.api) as own:
            rows = resolve_fields(q, own)
    else:
        rows = resolve_fields(q, client)
    loader = IDRFieldLoader(q)
    present = [r for r in rows if _complete(_image_dir(out, r))]
    todo = [r for r in rows if not _complete(_image_dir(out, r))]
    failed: list[tuple[str, str]] = []

    def one(row: dict[str, Any]) -> None:
        try:
            _write(loader, out, row)
        except _ERRORS as err:
            log.warning("could not fetch %s: %s", row["id"], err)
            failed.append((str(row["id"]), f"{type(err).__name__}: {err}"))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="biofm-fetch") as ex:
        list(ex.map(one, todo))
    failed_csv = out / "failed.csv"
    if failed:
        pd.DataFrame(failed, columns=["id", "reason"]).to_csv(failed_csv, index=False)
    elif failed_csv.exists():
        failed_csv.unlink()
    kept = [r for r in rows if _complete(_image_dir(out, r))]
    if not kept:
        raise BadInputError(f"none of the {len(rows)} fields of {q.text} could be fetched "
                            f"(first failure: {failed[0][1] if failed else '?'})",
                            f"see {failed_csv}; check the api= and zarr= URLs, or add "
                            "render=1")  # fmt: skip
    table = pd.DataFrame([{**r, "paths": str(_image_dir(out, r).resolve()), "channels": "",
                           "source": "idr",
                           "pixel_source": _source_of(_image_dir(out, r))} for r in kept])
    manifest = write_manifest(table.drop(columns=["zarr"]), out / "manifest.csv")
    return FetchReport(manifest, len(rows), len(todo) - len(failed), len(present), failed)
