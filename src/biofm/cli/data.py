"""``biofm data``: index image folders into manifests (one row per multichannel field)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# The names of biofm.io.filesets' SPECIAL_PATTERNS and PRESETS, written out so that building the
# parser imports no image readers (tests/cli/test_cli_startup.py keeps the two lists equal).
PATTERN_NAMES = ("suffix", "folders", "single", "auto", "phenix", "w", "d")
_PATTERN_HELP = (
    f"preset ({', '.join(PATTERN_NAMES)}) or a regex with (?P<channel>...) "
    "and named field groups (default: auto)"
)


def parse_channel_map(text: str | None) -> dict[str, str]:
    """``"ch5=DNA,ch2=AGP"`` -> ``{"ch5": "DNA", "ch2": "AGP"}``."""
    from biofm.core.errors import BadInputError

    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise BadInputError(
                f"channel map entry {item!r} is not KEY=NAME",
                "write --channel-map ch5=DNA,ch2=AGP (comma-separated KEY=NAME pairs)",
            )
        mapping[key.strip()] = name.strip()
    return mapping


def summary(df: pd.DataFrame, out: Path) -> str:
    """One line: rows written and how many rows have each channel count."""
    from biofm.io.manifest import channel_counts

    counts = channel_counts(df)
    hist = ", ".join(f"{k} ch: {counts[k]}" for k in sorted(counts, key=lambda k: (k == "?", k)))
    sources = df["source"].nunique()
    return f"wrote {len(df)} rows ({sources} sources) to {out}; channels per row: {hist}"


def run_index(args: argparse.Namespace) -> int:
    """Index FOLDER into a manifest: group per-channel files into fields with --pattern."""
    from biofm.io.filesets import DEFAULT_EXCLUDE
    from biofm.io.manifest import build_manifest, write_manifest

    df = build_manifest(
        args.folder,
        pattern=args.pattern,
        channel_map=parse_channel_map(args.channel_map),
        source=args.source,
        recursive=not args.no_recursive,
        pixel_size_um=args.pixel_size,
        exclude=tuple(args.exclude) if args.exclude is not None else DEFAULT_EXCLUDE,
        incomplete=args.incomplete,
    )
    out = write_manifest(df, args.out)
    print(summary(df, out))
    return 0


def run_index_shared(args: argparse.Namespace) -> int:
    """Index the shared real-data corpus (DATA_ROOT with dsb2018/, cellpainting_fields/, ...)."""
    from biofm.core.errors import BadInputError
    from biofm.io.corpus import shared_corpus_manifest
    from biofm.io.manifest import write_manifest

    df = shared_corpus_manifest(args.data_root)
    if args.only:
        unknown = sorted(set(args.only) - set(df["source"]))
        if unknown:
            raise BadInputError(f"no source named {', '.join(unknown)}",
                                f"choose from {', '.join(sorted(set(df['source'])))}")
        df = df[df["source"].isin(args.only)].reset_index(drop=True)
    if args.exclude_source:
        unknown = sorted(set(args.exclude_source) - set(df["source"]))
        if unknown:
            raise BadInputError(f"no source named {', '.join(unknown)}",
                                f"choose from {', '.join(sorted(set(df['source'])))}")
        df = df[~df["source"].isin(args.exclude_source)].reset_index(drop=True)
    out = write_manifest(df, args.out)
    print(summary(df, out))
    return 0


def run_norm_stats(args: argparse.Namespace) -> int:
    """Fit per-channel normalisation statistics over a manifest or folder and save them
    (pass the file to 'biofm embed --norm-stats', or to training as data.norm_stats)."""
    import dataclasses

    from biofm.data.norm_fit import fit_manifest_stats
    from biofm.data.normalize import NormalizeConfig
    from biofm.io.manifest import build_manifest, read_manifest

    src = Path(args.input)
    df = build_manifest(src) if src.is_dir() else read_manifest(src)
    root = None if src.is_dir() else src.parent
    cfg = dataclasses.replace(NormalizeConfig(low=args.low, high=args.high), scope=args.scope,
                              group_by=args.by or "auto")  # fmt: skip
    stats = fit_manifest_stats(df, cfg, root=root, fit_on=args.fit_on, per_group=args.per_group)
    out = stats.save(args.out)
    print(f"statistics of {len(stats.groups) or 1} group(s) "
          f"({stats.group_by or 'all images'}), channels {', '.join(stats.channels)}, "
          f"fitted on {stats.fitted_on} -> {out}")  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``index`` and ``index-shared`` subcommands."""
    data = subparsers.add_parser(
        "data", help="index image folders into manifests", description=__doc__
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])

    index = sub.add_parser("index", help=run_index.__doc__, description=run_index.__doc__)
    index.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    index.add_argument("--pattern", default="auto", help=_PATTERN_HELP)
    index.add_argument("--channel-map", help="rename channel keys: ch5=DNA,ch2=AGP")
    index.add_argument("--source", help="dataset name (default: the folder name)")
    index.add_argument("--out", type=Path, default=Path("manifest.csv"),
                       help="manifest to write (.csv or .parquet; default manifest.csv)")
    index.add_argument("--pixel-size", type=float, help="pixel size in µm for every row")
    index.add_argument("--no-recursive", action="store_true", help="do not enter subfolders")
    index.add_argument("--exclude", action="append", metavar="GLOB",
                       help="skip files/folders matching GLOB (repeatable; default: masks, labels)")
    index.add_argument("--incomplete", choices=("skip", "error", "keep"), default="skip",
                       help="fields lacking a channel others have (default: skip with a warning)")
    index.set_defaults(func=run_index)

    ns = sub.add_parser("norm-stats", help=run_norm_stats.__doc__,
                        description=run_norm_stats.__doc__)  # fmt: skip
    ns.add_argument("input", help="manifest CSV/parquet or folder of images")
    ns.add_argument("--out", type=Path, required=True, help="statistics file (.json)")
    ns.add_argument("--scope", choices=("source", "reference"), default="source",
                    help="per group (--by) or one set over all fitted rows (default source)")
    ns.add_argument("--by", help="group column (default: plate, else source, else study)")
    ns.add_argument("--fit-on", metavar="COLUMN=VALUE",
                    help="fit only on these rows, e.g. compound=DMSO")
    ns.add_argument("--per-group", type=int, default=256, help="images sampled per group")
    ns.add_argument("--low", type=float, default=1.0, help="low percentile (default 1)")
    ns.add_argument("--high", type=float, default=99.8, help="high percentile (default 99.8)")
    ns.set_defaults(func=run_norm_stats)

    shared = sub.add_parser(
        "index-shared", help=run_index_shared.__doc__, description=run_index_shared.__doc__
    )
    shared.add_argument("data_root", type=Path, help="the shared data folder")
    shared.add_argument("--out", type=Path, default=Path("manifest.csv"),
                        help="manifest to write (default manifest.csv)")
    shared.add_argument("--only", action="append", metavar="SOURCE",
                        help="keep only this source, e.g. dsb2018 (repeatable)")
    shared.add_argument("--exclude-source", action="append", metavar="SOURCE",
                        help="leave this source out, e.g. to score an encoder on it later "
                        "(repeatable)")
    shared.set_defaults(func=run_index_shared)
