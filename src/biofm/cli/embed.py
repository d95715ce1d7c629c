"""``biofm embed``: embed a folder of images or a manifest into a parquet table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "embed", help="embed images with a pretrained encoder",
        description="Embed every image of INPUT (a folder of images or a manifest CSV) with "
        "MODEL (a run directory of 'biofm train' or an encoder folder). Small images are "
        "brought up to the model's input; large fields are tiled and tiles averaged. Writes "
        "one row per image: path, metadata, emb_0000...",
    )
    p.add_argument("input", help="folder of images, or manifest CSV")
    p.add_argument("--model", required=True, help="run directory or encoder folder")
    p.add_argument("--out", required=True, help="output parquet file")
    p.add_argument("--pattern", default="auto",
                   help="for a folder: how files form multichannel images (see 'biofm data "
                   "index --help'); default auto")
    p.add_argument("--tile", type=int, help="tile size in image pixels (default: the model's "
                   "training crop)")
    p.add_argument("--input-size", type=int, help="pixels per tile fed to the model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biofm.eval.embed import EmbedConfig, embed_path
    from biofm.models.io import load_encoder_any

    model = load_encoder_any(args.model)
    cfg = EmbedConfig.for_model(model, tile=args.tile, input_size=args.input_size,
                                batch_size=args.batch_size, num_workers=args.workers,
                                device=args.device)
    n, dim = embed_path(model, Path(args.input), Path(args.out), cfg, pattern=args.pattern)
    print(f"embedded {n} images ({dim}-d) -> {args.out}")
    return 0
