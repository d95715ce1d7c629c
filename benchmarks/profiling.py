"""Profiling metrics on a screen with controls: replicate and activity mAP, before and after
batch correction, for encoders beside the untrained architecture and handcrafted features.

Each field of the manifest is embedded (tiles averaged per field, as ``biofm embed`` does),
fields are averaged per (plate, well) into well profiles, and `profile_report` scores them
uncorrected and after each correction fitted on the control wells of each plate.

    python benchmarks/profiling.py --manifest quickstart-out/data/manifest.csv \\
        --model quickstart=quickstart-out/run --control control \\
        --json benchmarks/results/profiling_quickstart.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from biofm.eval.baselines import handcrafted_features, untrained_like
from biofm.eval.batch_correction import aggregate_profiles
from biofm.eval.embed import EmbedConfig, embed_manifest
from biofm.eval.profiling import profile_report
from biofm.io.manifest import read_manifest, records
from biofm.io.samples import load_sample
from biofm.release import load_model


def field_features(method: str, model: Any, manifest: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(fields, D) features and the fields' metadata."""
    if method == "handcrafted":
        df = read_manifest(manifest)
        rows = records(df)
        x = np.stack([handcrafted_features(load_sample(r).pixels) for r in rows])
        return x, df.drop(columns=["paths", "channels"])
    cfg = EmbedConfig.for_model(model, progress=False)
    emb, meta = embed_manifest(model, manifest, cfg)
    return emb, meta


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path).eval()
    models["untrained"] = untrained_like(next(iter(models.values())), seed=args.seed)
    rows = []
    cache = Path(tempfile.mkdtemp(prefix="biofm-copairs-"))
    for method in [*models, "handcrafted"]:
        t0 = time.perf_counter()
        x, meta = field_features(method, models.get(method), args.manifest)
        profiles, wells = aggregate_profiles(x, meta, [args.plate, args.well])
        table = profile_report(profiles, wells, args.perturbation, args.control, args.plate,
                               null_size=args.null_size, seed=args.seed, cache_dir=cache)
        for record in table.reset_index().to_dict("records"):
            rows.append({"features": method, **record})
        print(f"{method:12s} {len(wells)} wells  {time.perf_counter() - t0:.1f} s", flush=True)
    return {"benchmark": "profiling", "manifest": str(args.manifest), "control": args.control,
            "perturbation": args.perturbation, "plate": args.plate, "well": args.well,
            "models": {s.partition("=")[0]: s.partition("=")[2] for s in args.model},
            "torch": torch.__version__, "results": rows}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--perturbation", default="treatment")
    ap.add_argument("--control", default="control")
    ap.add_argument("--plate", default="plate")
    ap.add_argument("--well", default="well")
    ap.add_argument("--null-size", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    res = run(args)
    df = pd.DataFrame(res["results"])
    cols = [c for c in ("features", "method", "replicate_map", "replicate_fraction_retrieved",
                        "activity_map", "activity_fraction_retrieved") if c in df.columns]
    with pd.option_context("display.width", 200):
        print(df[cols].round(3).to_string(index=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
