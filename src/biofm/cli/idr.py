"""``biofm idr``: browse the IDR study catalogue (offline from IDR's catalogue files, or from
the live API) and mirror fields of a study to local OME-Zarr."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biofm.idr.catalog import Catalog

# biofm.idr.catalog.ENV_VAR, written out so that building the parser imports no pandas
# (tests/cli/test_cli_startup.py keeps the two equal).
CATALOG_ENV_VAR = "BIOFM_IDR_CATALOG"
_CATALOG_HELP = (f"folder with IDR's idr_studies.tsv (default: ${CATALOG_ENV_VAR}, "
                 "else ../shared/idr/catalog)")


def _missing(value: Any) -> bool:
    """None or a pandas missing value (NaN, NA, NaT)."""
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _size(tb: Any) -> str:
    """Terabytes -> a short human size."""
    if _missing(tb):
        return "?"
    for unit, scale in (("TB", 1.0), ("GB", 1e3), ("MB", 1e6)):
        if tb * scale >= 1:
            return f"{tb * scale:.1f} {unit}"
    return f"{tb * 1e9:.0f} KB"


def _num(value: Any) -> str:
    """Average dimension: ``5.0`` -> ``"5"``, ``2.9`` -> ``"2.9"``, missing -> ``"?"``."""
    if _missing(value):
        return "?"
    return f"{value:g}"


def format_studies(cat: Catalog) -> str:
    """Aligned table: study, container, images, C, XY, size, sample type; then a count line."""
    header = ("study", "container", "images", "C", "XY", "size", "sample")
    rows = [header]
    for r in cat.to_records():
        rows.append((r["study"], r["container"], str(r["images"]), _num(r["c"]),
                     f"{_num(r['x'])}x{_num(r['y'])}",
                     _size(r["size_tb"]), r["sample_type"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {2, 3}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    studies = cat.table["study_id"].nunique()
    images = int(cat.table["images"].sum()) if len(cat) else 0
    lines.append(f"{len(cat)} containers in {studies} studies, {images:,} images")
    return "\n".join(lines)


def format_show(info: dict[str, Any]) -> str:
    """Readable summary of :meth:`Catalog.show`."""
    ann = info["annotations"]
    lines = [f"{info['study']} ({info['study_id']})"]
    first = info["containers"][0]
    header = (("title", ann.get("title")),
              ("license", ann.get("license") or first["license"]),
              ("organism", ann.get("organism") or first["organism"]),
              ("publication", ann.get("publication_doi")))
    for key, value in header:
        if value:
            lines.append(f"  {key}: {value}")
    for c in info["containers"]:
        lines.append(f"  {c['container']} ({c['kind']}): {c['images']} images, C={_num(c['c'])}, "
                     f"{_num(c['x'])}x{_num(c['y'])}x{_num(c['z'])}, T={_num(c['t'])}, "
                     f"{_size(c['size_tb'])}, {c['sample_type']}, {c['imaging_method'] or '?'}")
        for name in info["channels"].get(c["container"], []):
            lines.append(f"    channel: {name}")
        plates = info["plates"].get(c["container"])
        if plates:
            shown = ", ".join(p["name"] for p in plates["plates"])
            more = plates["count"] - len(plates["plates"])
            tail = f", ... (+{more})" if more > 0 else ""
            lines.append(f"    plates ({plates['count']}): {shown}{tail}")
    for d in info["downloads"]:
        url = d.get("client_path") or d.get("download_url") or d.get("bia_url")
        lines.append(f"  download: {d.get('data_location') or '?'} zarr={d.get('is_zarr')} {url}")
    return "\n".join(lines)


def _live_catalog(url: str) -> Catalog:
    """Screens read from the live API at ``url`` (several requests per screen)."""
    from biofm.idr.http import IDRClient
    from biofm.idr.live import live_catalog

    with IDRClient(url) as client:
        return live_catalog(client)


def run_studies(args: argparse.Namespace) -> int:
    """List IDR containers (screens/experiments), filtered."""
    from biofm.idr.catalog import load_catalog

    cat = _live_catalog(args.live) if args.live else load_catalog(args.catalog)
    cat = cat.filter(
        study=args.study, sample_type=args.sample_type, imaging_method=args.imaging_method,
        organism=args.organism, min_channels=args.min_channels, max_channels=args.max_channels,
        min_images=args.min_images, max_size_tb=args.max_size_tb, kind=args.kind)
    print(json.dumps(cat.to_records(), indent=1) if args.json else format_studies(cat))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Show one study: containers, channels, plates, licence, download locations."""
    from biofm.idr.catalog import load_catalog

    info = load_catalog(args.catalog).show(args.study_id, max_plates=args.max_plates)
    print(json.dumps(info, indent=1) if args.json else format_show(info))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Mirror the fields of an idr: query to local OME-Zarr plus a training manifest."""
    from biofm.idr.fetch import fetch
    from biofm.idr.query import PREFIX, parse_query

    text = args.query if args.query.startswith(PREFIX) else PREFIX + args.query
    report = fetch(parse_query(text), args.out, workers=args.workers)
    print(f"{report.fields} fields: {report.fetched} fetched, {report.present} already there, "
          f"{len(report.failed)} failed -> {report.manifest}")
    for fid, reason in report.failed[:10]:
        print(f"  failed {fid}: {reason}")
    if report.failed:
        print(f"  (all failures in {report.manifest.parent / 'failed.csv'}; run again to retry)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``idr`` with its ``studies`` and ``show`` subcommands."""
    idr = subparsers.add_parser("idr", help="browse the IDR catalogue; mirror fields to OME-Zarr",
                                description=__doc__)
    sub = idr.add_subparsers(dest="idr_command", metavar="SUBCOMMAND", required=True)
    studies = sub.add_parser("studies", help="list and filter IDR screens/experiments",
                             description=run_studies.__doc__)
    studies.add_argument("--catalog", help=_CATALOG_HELP)
    studies.add_argument("--live", metavar="URL",
                         help="read the screens from a live IDR server instead, e.g. "
                              "https://idr.openmicroscopy.org (slower; --catalog is ignored)")
    studies.add_argument("--study", help="study name contains this text")
    studies.add_argument("--sample-type", help="e.g. cell or tissue (substring, any case)")
    studies.add_argument("--imaging-method", help="e.g. 'confocal' (substring, any case)")
    studies.add_argument("--organism", help="e.g. 'homo sapiens' (substring, any case)")
    studies.add_argument("--min-channels", type=int, help="average C at least N")
    studies.add_argument("--max-channels", type=int, help="average C at most N")
    studies.add_argument("--min-images", type=int, help="at least N images")
    studies.add_argument("--max-size-tb", type=float, help="at most X terabytes")
    studies.add_argument("--kind", choices=("screen", "experiment"), help="container kind")
    studies.add_argument("--json", action="store_true", help="print JSON records instead")
    studies.set_defaults(func=run_studies)
    show = sub.add_parser("show", help="details of one study", description=run_show.__doc__)
    show.add_argument("study_id", help="e.g. idr0036 or idr0036-gustafsdottir-cellpainting")
    show.add_argument("--catalog", help=_CATALOG_HELP)
    show.add_argument("--max-plates", type=int, default=10, help="plates listed per screen")
    show.add_argument("--json", action="store_true", help="print JSON instead")
    show.set_defaults(func=run_show)
    fetch = sub.add_parser(
        "fetch", help="mirror fields of an IDR study to local OME-Zarr + manifest",
        description=(run_fetch.__doc__ or "") + " Query: idr0036?plates=2&wells=16&fields=2 (keys: "
        "plates, plate, wells, fields, api, zarr, cache, cache_gb, render; see docs/idr.md). "
        "Runs again fetch only what is missing.")  # fmt: skip
    fetch.add_argument("query", help="e.g. 'idr:idr0036?plates=1&wells=8&fields=2'")
    fetch.add_argument("--out", required=True, help="output folder")
    fetch.add_argument("--workers", type=int, default=8, help="fields fetched at once (<= 8)")
    fetch.set_defaults(func=run_fetch)
