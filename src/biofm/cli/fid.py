"""``biofm fid REAL FAKE --model M --json OUT``: BioFID between two image sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biofm.cli import MODEL_HELP

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from biofm.eval.biofid import Protocol


def register(sub: Any) -> None:
    """Add ``fid`` to the top-level parser."""
    p = sub.add_parser(
        "fid",
        help="BioFID: Fréchet distance in a biofm encoder's feature space",
        description="Fréchet distance between the features of REAL and FAKE images under a "
        "fixed protocol: one ordered channel set, a per-channel scaling taken from the REAL "
        "set (percentiles), fixed crops. REAL is a folder of images, a manifest CSV, or "
        "reference statistics (.npz) written by --save-ref. See docs/biofid.md.",
    )
    p.add_argument("real", type=Path, metavar="REAL", help="folder, manifest CSV or .npz")
    p.add_argument("fake", type=Path, metavar="FAKE", help="folder or manifest CSV")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--json", required=True, type=Path, metavar="OUT", help="results JSON")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--ref-stats",
        type=Path,
        metavar="IN.npz",
        help="reference statistics and protocol to compare against (REAL is then "
        "only read for --kid/--fd-inf/--condition)",
    )
    ref.add_argument(
        "--save-ref",
        type=Path,
        metavar="OUT.npz",
        help="write REAL's statistics and protocol for later runs",
    )
    p.add_argument("--kid", action="store_true", help="also report KID (needs REAL images)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument(
        "--kid-subset-size", type=int, help="default: 1000, or the smaller set's size when smaller"
    )
    p.add_argument("--fd-inf", action="store_true", help="also report FD-infinity")
    p.add_argument(
        "--condition",
        metavar="COLUMN",
        help="also report FD per value of this metadata column and their mean",
    )
    p.add_argument("--bootstrap", type=int, default=200, help="replicates for --condition")
    p.add_argument(
        "--channels",
        help="comma-separated channel set, in order (default: the first REAL image's channels)",
    )
    p.add_argument(
        "--crop", type=int, help="crop size in pixels (default: the model's tile, else 64)"
    )
    p.add_argument(
        "--input-size", type=int, help="pixels the encoder sees per crop (default: the crop size)"
    )
    p.add_argument("--max-crops", type=int, help="crops per image (default 64)")
    p.add_argument(
        "--levels",
        type=int,
        help="quantise scaled intensities to this many levels (e.g. 256 when the fakes are 8-bit)",
    )
    p.add_argument("--pattern", default="auto", help="how files form multichannel images")
    p.add_argument(
        "--norm-stats", metavar="FILE",
        help="scale real and fake images with these saved per-channel statistics (e.g. the "
        "controls of a plate: 'biofm data norm-stats --fit-on compound=DMSO') instead of "
        "percentiles fitted on REAL",
    )
    p.add_argument("--norm-group", metavar="GROUP",
                   help="with per-plate statistics: the plate/source to use (default: pooled)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _channels(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    from biofm.core.errors import BadInputError

    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise BadInputError(f"--channels {text!r} names no channel", "e.g. --channels DNA,RNA")
    return names


def _column(meta: pd.DataFrame, name: str, which: str) -> np.ndarray:
    if name not in meta.columns:
        from biofm.core.errors import BadInputError

        cols = ", ".join(c for c in meta.columns if c not in ("crop_index",)) or "(none)"
        raise BadInputError(
            f"{which} images have no metadata column {name!r}",
            f"use one of: {cols} (or pass a manifest CSV with that column)",
        )
    return meta[name].astype(str).to_numpy()


def run(args: argparse.Namespace) -> int:
    from biofm.core.errors import BadInputError
    from biofm.eval.biofid import (
        BioFIDConfig,
        extract_features,
        fit_protocol,
        image_source,
        metadata,
        model_sha256,
        with_overrides,
    )
    from biofm.eval.frechet import (
        FeatureStats,
        check_compatible,
        conditional_fd,
        fd_from_stats,
        fd_infinity,
        kid,
        load_stats,
    )
    from biofm.release import load_model

    model = load_model(args.model)
    sha = model_sha256(model)
    card = getattr(model, "weights_card", {}) or {}
    crop = args.crop or int(card.get("tile", 64))
    cfg = BioFIDConfig(
        channels=_channels(args.channels),
        crop=crop,
        input_size=args.input_size,
        max_crops=args.max_crops or 64,
        levels=args.levels,
        batch_size=args.batch_size,
        device=args.device,
    )
    real_is_stats = args.real.suffix.lower() == ".npz"
    ref_path = args.ref_stats or (args.real if real_is_stats else None)
    needs_real = ref_path is None or args.kid or args.fd_inf or args.condition
    if real_is_stats and needs_real:
        raise BadInputError(
            "--kid, --fd-inf and --condition need the real features",
            "pass the REAL image folder (and the statistics with --ref-stats)",
        )

    real_feats = real_meta = None
    if ref_path is not None:
        real_stats, ref_meta = load_stats(ref_path)
        protocol = _protocol_from(ref_meta, str(ref_path))
        wanted = with_overrides(
            protocol,
            channels=cfg.channels,
            crop=args.crop,
            input_size=args.input_size,
            max_crops=args.max_crops,
            levels=args.levels,
        )
        check_compatible(ref_meta, metadata(sha, wanted))
    else:
        real_src, n_real = image_source(args.real, args.pattern)
        protocol = fit_protocol(real_src(), cfg, n_real)
        if args.norm_stats:
            protocol = _with_stats(protocol, args.norm_stats, args.norm_group, sha)
    meta = metadata(sha, protocol)
    if needs_real:
        real_src, _ = image_source(args.real, args.pattern)
        real_feats, real_meta = extract_features(
            model, real_src(), protocol, cfg.batch_size, cfg.device
        )
        if ref_path is None:
            real_stats = FeatureStats.from_features(real_feats)
    fake_src, _ = image_source(args.fake, args.pattern)
    fake_feats, fake_meta = extract_features(
        model, fake_src(), protocol, cfg.batch_size, cfg.device
    )
    fake_stats = FeatureStats.from_features(fake_feats)
    if args.save_ref is not None:
        real_stats.save(args.save_ref, {**meta, "source": str(args.real)})

    out: dict[str, Any] = {
        "metric": "biofid",
        "fd": fd_from_stats(real_stats, fake_stats),
        "n_real": real_stats.n,
        "n_fake": fake_stats.n,
        "dims": real_stats.dims,
        "real": str(args.real),
        "fake": str(args.fake),
        "model": str(args.model),
        **meta,
    }
    if args.kid:
        assert real_feats is not None
        size = args.kid_subset_size or min(1000, len(real_feats), len(fake_feats))
        mean, std = kid(real_feats, fake_feats, args.kid_subsets, size, args.seed)
        out["kid"] = {"mean": mean, "std": std, "subsets": args.kid_subsets, "subset_size": size}
    if args.fd_inf:
        out["fd_infinity"] = fd_infinity(real_feats, fake_feats, seed=args.seed)
    if args.condition:
        assert real_meta is not None
        out["conditional"] = conditional_fd(
            real_feats,
            _column(real_meta, args.condition, "REAL"),
            fake_feats,
            _column(fake_meta, args.condition, "FAKE"),
            n_boot=args.bootstrap,
            seed=args.seed,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str))
    line = f"BioFID {out['fd']:.4f} (real {out['n_real']} crops, fake {out['n_fake']} crops"
    if "kid" in out:
        line += f"; KID {out['kid']['mean']:.5f} ± {out['kid']['std']:.5f}"
    if "fd_infinity" in out:
        line += f"; FD-inf {out['fd_infinity']['intercept']:.4f}"
    if "conditional" in out:
        c = out["conditional"]
        line += f"; conditional {c['mean']:.4f} [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}]"
    print(line + f") -> {args.json}")
    return 0


def _with_stats(protocol: Protocol, path: str, group: str | None, sha: str) -> Protocol:
    """``protocol`` with the per-channel (lo, hi) of saved statistics."""
    from dataclasses import replace

    from biofm.core.errors import BadInputError
    from biofm.data.norm_stats import NormStats

    stats = NormStats.load(path)
    stats.check_for({}, sha)
    ranges = stats.ranges(list(protocol.channels), group, path)
    if ranges is None:
        raise BadInputError(f"{path} holds too few pixels to scale with",
                            "fit statistics on more images, or drop --norm-stats")  # fmt: skip
    return replace(protocol, lo=tuple(map(float, ranges[0])), hi=tuple(map(float, ranges[1])),
                   low=stats.low, high=stats.high)


def _protocol_from(meta: dict[str, Any], where: str) -> Protocol:
    """The protocol recorded in reference statistics metadata."""
    from biofm.core.errors import BadInputError
    from biofm.eval.biofid import Protocol

    try:
        return Protocol.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as err:
        raise BadInputError(
            f"statistics file records no BioFID protocol ({err})",
            "recompute it with 'biofm fid REAL FAKE --save-ref OUT.npz'",
            where,
        ) from err
