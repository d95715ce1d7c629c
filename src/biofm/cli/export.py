"""``biofm export {release,hf,torchhub,bioimageio}``: package a trained encoder for sharing.

- ``release RUN --name NAME --out DIR``: a release folder (``config.json`` card,
  ``model.safetensors``, ``README.md``) recording the training data with licences and,
  with ``--tasks``, the model's task results beside the baselines.
- ``hf MODEL --out DIR [--push org/name]``: the Hugging Face Hub folder; ``--push`` uploads it.
- ``torchhub MODEL --out DIR``: ``NAME-<sha256>.safetensors`` + ``.json`` for a GitHub release,
  and the ``torch.hub.load`` line that loads them.
- ``bioimageio MODEL --out pkg.zip --channels DNA,ER,...``: a bioimage.io (format 0.5) package
  for one channel configuration, with state-dict and TorchScript weights and test tensors.

Every export carries the same biofm version string as the package.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from biofm.cli import MODEL_HELP


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="package an encoder: release folder, Hugging Face, "
                              "torch.hub, bioimage.io", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="export_command", metavar="FORMAT", required=True)

    rel = sub.add_parser("release", help="release folder with a full weights card",
                         description=build_release_cmd.__doc__)
    rel.add_argument("model", help=MODEL_HELP)
    rel.add_argument("--name", required=True, help="released name, e.g. biofm-vit-tiny")
    rel.add_argument("--out", required=True, help="output folder")
    rel.add_argument("--manifest", help="training manifest (default: the run's)")
    rel.add_argument("--tasks", help="benchmarks/tasks.py JSON holding this model's results")
    rel.add_argument("--method", help="the model's name in that JSON")
    rel.add_argument("--license", default="apache-2.0", help="SPDX id of the weights' licence")
    rel.set_defaults(func=build_release_cmd)

    hf = sub.add_parser("hf", help="Hugging Face Hub folder (and push)", description=hf_cmd.__doc__)
    hf.add_argument("model", help=MODEL_HELP)
    hf.add_argument("--out", required=True, help="output folder")
    hf.add_argument("--push", metavar="REPO_ID", help="also upload to this Hub repo")
    hf.add_argument("--private", action="store_true", help="create the Hub repo private")
    hf.set_defaults(func=hf_cmd)

    th = sub.add_parser("torchhub", help="weights + card files for a GitHub release",
                        description=torchhub_cmd.__doc__)
    th.add_argument("model", help=MODEL_HELP)
    th.add_argument("--out", required=True, help="output folder")
    th.set_defaults(func=torchhub_cmd)

    bio = sub.add_parser("bioimageio", help="bioimage.io model package (zip)",
                         description=bioimageio_cmd.__doc__)
    bio.add_argument("model", help=MODEL_HELP)
    bio.add_argument("--out", required=True, help="package file (.zip)")
    bio.add_argument("--channels", required=True,
                     help="comma-separated channel names, in the order the package takes them")
    bio.add_argument("--input-size", type=int, help="tile side (default: the card's)")
    bio.add_argument("--sample", help="an image file to use as the package's test input")
    bio.add_argument("--authors", help="comma-separated author names")
    bio.add_argument("--norm-stats", metavar="FILE",
                     help="bake fixed per-channel statistics (biofm data norm-stats, or an "
                     "embedding's OUT.norm.json) into the package instead of per-image scaling")
    bio.add_argument("--norm-group", metavar="GROUP",
                     help="with per-plate statistics: the plate/source whose statistics to use "
                     "(default: the pooled reference)")
    bio.set_defaults(func=bioimageio_cmd)


def build_release_cmd(args: argparse.Namespace) -> int:
    """Write a release folder (card, safetensors weights, model card) for a trained model."""
    from biofm.release.build import build_release

    out = build_release(args.model, args.out, name=args.name, manifest=args.manifest,
                        tasks_json=args.tasks, method=args.method, license=args.license)
    print(f"release folder: {out}")
    return 0


def hf_cmd(args: argparse.Namespace) -> int:
    """Write the Hugging Face Hub folder of a model; with --push, upload it (needs a token:
    'hf auth login' or HF_TOKEN)."""
    from biofm.release import load_model
    from biofm.release.card import release_card
    from biofm.release.hf import export_hf

    model = load_model(args.model)
    model.weights_card = release_card(model)  # type: ignore[assignment]
    url = export_hf(model, args.out, repo_id=args.push, private=args.private or None)
    print(f"Hub folder: {args.out}" + (f"; pushed: {url}" if url else ""))
    return 0


def torchhub_cmd(args: argparse.Namespace) -> int:
    """Write NAME-<sha256>.safetensors and .json for a GitHub release; prints how to load them."""
    from biofm.release import load_model
    from biofm.release.torchhub import export_torchhub

    print(json.dumps(export_torchhub(load_model(args.model), args.out), indent=2))
    return 0


def bioimageio_cmd(args: argparse.Namespace) -> int:
    """Write a bioimage.io model package (format 0.5) for one channel configuration."""
    from biofm.release import load_model
    from biofm.release.bioimageio import export_bioimageio

    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    sample = None
    if args.sample:
        from biofm.io.images import read_image

        sample = read_image(args.sample).pixels
    authors = [a.strip() for a in args.authors.split(",")] if args.authors else None
    stats = None
    if args.norm_stats:
        from biofm.data.norm_stats import NormStats

        stats = NormStats.load(args.norm_stats)
    out = export_bioimageio(load_model(args.model), args.out, channels=channels,
                            input_size=args.input_size, sample=sample, authors=authors,
                            norm_stats=stats, norm_group=args.norm_group)
    print(f"bioimage.io package: {out}")
    return 0
