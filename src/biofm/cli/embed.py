"""``biofm embed``: embed a folder of images or a manifest into a parquet table or Zarr store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biofm.cli import MODEL_HELP


def add_norm_args(p: Any) -> None:
    """--norm, --norm-by, --norm-fit-on, --norm-stats (shared by embed and fid)."""
    p.add_argument(
        "--norm", choices=("source", "reference", "image"), default=None,
        help="intensity scaling: 'source' (default) fits per-channel statistics per group "
        "(--norm-by) over the input; 'reference' one set over all fitted rows; 'image' "
        "scales each image by its own percentiles (erases absolute intensity)")
    p.add_argument("--norm-by", metavar="COLUMN", default=None,
                   help="manifest column grouping images for --norm source (default: plate, "
                   "else source, else study, else all images together)")
    p.add_argument("--norm-fit-on", metavar="COLUMN=VALUE", default=None,
                   help="fit statistics only on these rows, e.g. the controls: compound=DMSO "
                   "(several values: compound=DMSO|EMPTY)")
    p.add_argument("--norm-stats", metavar="FILE", default=None,
                   help="use saved statistics (an OUT.norm.json of an earlier run, or a "
                   "run's norm_stats.json) instead of fitting")


def norm_spec(args: argparse.Namespace) -> Any:
    from biofm.eval.embed_run import NormSpec

    if args.norm_stats and (args.norm == "image" or args.norm_by or args.norm_fit_on):
        from biofm.core.errors import BadInputError

        raise BadInputError("--norm-stats gives the statistics; --norm image, --norm-by and "
                            "--norm-fit-on only apply when statistics are fitted",
                            "drop one of them")  # fmt: skip
    return NormSpec(args.norm, args.norm_by, args.norm_fit_on, args.norm_stats)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "embed",
        help="embed images with a pretrained encoder",
        description="Embed every image of INPUT (a folder of images or a manifest CSV) with "
        "MODEL (a shipped model such as biofm-vit-tiny, a release or encoder folder, a run "
        "directory of 'biofm train' or a Hugging Face repo id). Small images are "
        "brought up to the model's input; large fields are tiled and tiles averaged. Writes "
        "one row per image: path, metadata, emb_0000... (parquet), or a .zarr store with an "
        "'emb' array and the metadata. Results are saved in chunks in OUT.partial/ as they "
        "come: rerunning the same command after an interruption continues where it stopped. "
        "Intensities are scaled per channel with statistics fitted on the input itself, per "
        "plate/source column when the manifest has one (--norm source, the default), so "
        "differences of brightness between images (DNA content, dose) are kept; the "
        "statistics are saved as OUT.norm.json and can be reused with --norm-stats.",
    )
    p.add_argument("input", help="folder of images, or manifest CSV")
    p.add_argument("--model", default=None,
                   help=MODEL_HELP + " (default: the recommended shipped model)")
    p.add_argument("--out", required=True, help="output file: .parquet or .zarr")
    p.add_argument(
        "--format",
        choices=("parquet", "zarr"),
        help="output format (default: from the suffix of --out)",
    )
    p.add_argument(
        "--blocks",
        nargs="?",
        const="all",
        metavar="K,K,...",
        help="also write each block's pooled features (blockK_ columns, or "
        "blocks/K arrays in Zarr): all blocks, or a list such as 3,6,11 "
        "(negative counts from the end)",
    )
    p.add_argument(
        "--pattern",
        default="auto",
        help="for a folder: how files form multichannel images (see 'biofm data "
        "index --help'); default auto",
    )
    p.add_argument(
        "--tile", type=int, help="tile size in image pixels (default: the model's training crop)"
    )
    p.add_argument("--input-size", type=int, help="pixels per tile fed to the model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--chunk-images",
        type=int,
        default=1024,
        help="images per saved chunk of a resumable run (default 1024)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished run in OUT.partial/ instead of resuming it",
    )
    add_norm_args(p)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biofm.eval.embed import EmbedConfig
    from biofm.eval.embed_run import embed_path
    from biofm.release import load_model

    model = load_model(args.model)
    cfg = EmbedConfig.for_model(
        model,
        tile=args.tile,
        input_size=args.input_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
    )
    s = embed_path(
        model,
        Path(args.input),
        Path(args.out),
        cfg,
        pattern=args.pattern,
        fmt=args.format,
        blocks=args.blocks,
        restart=args.restart,
        chunk_images=args.chunk_images,
        norm=norm_spec(args),
    )
    extra = f", blocks {','.join(map(str, s.blocks))}" if s.blocks else ""
    resumed = f", {s.n_resumed} from an earlier run" if s.n_resumed else ""
    skipped = f", {s.n_skipped} unreadable skipped" if s.n_skipped else ""
    print(f"embedded {s.n_images} images ({s.dim}-d{extra}{resumed}{skipped}) -> {s.out}")
    if s.norm_file is not None:
        print(f"normalisation: scope {s.norm_scope}, statistics in {s.norm_file}")
    else:
        print("normalisation: scope image (each image by its own percentiles)")
    return 0
