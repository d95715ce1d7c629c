"""Per-image vs source vs reference intensity scaling, on real single-cell tasks.

The same images, features and probes, only the normalisation changes:

- ``image``: each crop by its own per-channel percentiles (what biofm did before scopes);
- ``source``: statistics of the crop's plate (all its crops);
- ``source_controls``: statistics of the crop's plate fitted on its control (DMSO) crops
  only, the usual high-content-screening choice (BBBC021 only: the mitosis field has none);
- ``reference``: one set of statistics pooled over every crop of the task.

Tasks: BBBC021 condition (DMSO / cycloheximide 5, 15, 50 µM; train plates -> held-out plate)
and ExampleHuman mitosis (PH3 withheld; 5-fold CV). Methods: handcrafted features, pixel PCA,
and each encoder (default: the shipped model) with an untrained copy. Prints a table and saves
JSON (and markdown with ``--md``).

    python benchmarks/normalization.py --json benchmarks/results/normalization_cpu.json \\
        --md benchmarks/results/normalization_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biofm.data.norm_fit import fit_sample_stats
from biofm.data.norm_stats import NormStats
from biofm.eval.baselines import untrained_like
from biofm.eval.tasks import Task, bbbc021_condition, build_tasks
from biofm.release import load_model
from tasks import features, score

SCOPES = ("image", "source", "source_controls", "reference")


def scope_stats(task: Task, scope: str) -> NormStats | str | None:
    """The statistics of ``scope`` for the task (None: per image; "n/a": not applicable)."""
    if scope == "image":
        return None
    if scope == "reference":
        return fit_sample_stats(task.images, "reference")
    controls = None
    if scope == "source_controls":
        if "DMSO" not in set(task.target):
            return "n/a"
        controls = [t == "DMSO" for t in task.target]
    return fit_sample_stats(task.images, "source", group_by="plate", mask=controls)


def load_tasks(shared: Path, seed: int, most: int | None) -> list[Task]:
    rng = np.random.default_rng(seed)
    mitosis = build_tasks(shared, ("ph3_mitosis",), seed=seed)[0]
    for s in mitosis.images:
        s.meta["plate"] = "ExampleHuman"
    return [bbbc021_condition(shared, rng, most), mitosis]


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    models = {name: load_model(path or None).eval() for name, _, path in
              (m.partition("=") for m in args.model)}  # fmt: skip
    models["untrained"] = untrained_like(next(iter(models.values())), seed=args.seed)
    rows = []
    for task in load_tasks(args.shared, args.seed, args.most):
        for scope in SCOPES:
            stats = scope_stats(task, scope)
            if isinstance(stats, str):
                continue
            for method in [*models, "handcrafted", "pixel_pca"]:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    x = features(method, task, models, stats)[""]
                for metric, value in score(task, x, args.seed).items():
                    rows.append({"task": task.name, "scope": scope, "method": method,
                                 "metric": metric, "value": value, "n": len(task.images)})
                print(f"  {task.name} {scope:15s} {method:12s} "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    return {"benchmark": "normalization", "seed": args.seed, "models": args.model,
            "machine": {"platform": platform.platform(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()}, "results": rows}  # fmt: skip


def table(res: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame(res["results"])
    return df.pivot_table(index=["task", "metric", "method"], columns="scope", values="value",
                          sort=False)[[s for s in SCOPES if s in set(df["scope"])]]  # fmt: skip


def markdown(df: pd.DataFrame) -> str:
    head = ["task", "metric", "method", *df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, row in df.iterrows():
        cells = [f"{v:.3f}" if pd.notna(v) else "" for v in row]
        lines.append("| " + " | ".join([*map(str, key), *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", action="append", metavar="NAME=PATH",
                    help="encoders (repeatable; default: the shipped model)")
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--most", type=int, help="BBBC021 crops to use (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args(argv)
    args.model = args.model or ["shipped="]
    res = run(args)
    df = table(res)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(df.round(3).to_string())
    for path, text in ((args.json, json.dumps(res, indent=2)), (args.md, markdown(df))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
