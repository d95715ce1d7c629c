"""Downstream tasks on real images: pretrained encoders beside the built-in baselines.

For every task of `biofm.eval.tasks` (DSB2018 modality and nucleus count, ExampleHuman
mitosis with PH3 withheld, BBBC006 defocus, Cell Painting same-field retrieval, digits) and
every method, the frozen features are scored:

- classification: 1-NN macro-F1 (CHAMMI protocol) and logistic-regression accuracy, 5 folds;
- regression: ridge R² (5 folds; grouped by source image where the task has groups);
- retrieval: mAP of retrieving the other tiles of the same field (cosine).

Methods: each ``--model NAME=RUN_OR_ENCODER``; ``untrained`` (the first model's architecture
with fresh weights); ``handcrafted`` (channel-pooled intensity, texture, focus and shape
features); ``pixel_pca`` (PCA of 32² channel planes, 32 components). Prints one table with
the methods side by side and each model's margin over the best baseline (a difference, as
R² can be negative); saves JSON (and a markdown table with ``--md``). Ridge penalties are
chosen inside each training fold.

    python benchmarks/tasks.py --model shared=../runs/tiny_shared \\
        --model quickstart=runs/quickstart --json benchmarks/results/tasks_cpu.json \\
        --md benchmarks/results/tasks_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from biofm.eval.baselines import PixelPCA, handcrafted_features, untrained_like
from biofm.eval.knn import evaluate_knn
from biofm.eval.linear import linear_classification, linear_regression
from biofm.eval.profiling import replicate_average_precision
from biofm.eval.sample_embed import embed_samples, model_input_size
from biofm.eval.tasks import TASKS, Task, build_tasks
from biofm.release import load_model

BASELINES = ("untrained", "handcrafted", "pixel_pca")


def features(method: str, task: Task, models: dict[str, Any]) -> np.ndarray:
    """(N, D) features of the task's images by ``method``."""
    if method == "handcrafted":
        return np.stack([handcrafted_features(s.pixels) for s in task.images])
    if method == "pixel_pca":
        return PixelPCA(32, 32).fit([s.pixels for s in task.images]).transform(
            [s.pixels for s in task.images])  # fmt: skip
    model = models[method]
    return embed_samples(model, task.images, input_size=model_input_size(model))


def score(task: Task, x: np.ndarray, seed: int) -> dict[str, float]:
    """The task's metrics of features ``x`` (means over folds)."""
    if task.kind == "classification":
        knn = evaluate_knn(x, task.target, n_splits=5, seed=seed)
        lin = linear_classification(x, task.target, n_splits=5, seed=seed)
        return {"1nn_macro_f1": knn["one_nn_macro_f1"]["mean"],
                "linear_accuracy": lin["accuracy"]["mean"]}  # fmt: skip
    if task.kind == "regression":
        reg = linear_regression(x, task.target, n_splits=5, seed=seed, groups=task.groups,
                                alpha=None)  # fmt: skip
        return {"ridge_r2": reg["r2"]["mean"]}
    meta = pd.DataFrame({"field": task.target})
    ap = replicate_average_precision(x, meta, "field")
    return {"same_field_map": float(ap["average_precision"].mean())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    models: dict[str, Any] = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path).eval()
    if models:
        models["untrained"] = untrained_like(next(iter(models.values())), seed=args.seed)
    methods = [*models, "handcrafted", "pixel_pca"]  # models include "untrained" when given
    rows = []
    for task in build_tasks(args.shared, tuple(args.tasks), seed=args.seed):
        for method in methods:
            t0 = time.perf_counter()
            x = features(method, task, models)
            for metric, value in score(task, x, args.seed).items():
                rows.append({"task": task.name, "metric": metric, "method": method,
                             "value": value, "n": len(task.images), "dim": int(x.shape[1]),
                             "seconds": time.perf_counter() - t0})  # fmt: skip
            print(f"  {task.name:14s} {method:12s} done in {time.perf_counter() - t0:.1f} s",
                  flush=True)  # fmt: skip
    return {
        "benchmark": "tasks", "seed": args.seed, "models": dict(
            (s.partition("=")[0], s.partition("=")[2]) for s in args.model),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "tasks": {t: next(iter([r["n"] for r in rows if r["task"] == t]), 0)
                  for t in args.tasks},
        "results": rows,
    }  # fmt: skip


def table(res: dict[str, Any]) -> pd.DataFrame:
    """Rows (task, metric), columns methods, plus each model's margin over the best baseline
    (a difference: R² can be negative, so a ratio would mislead)."""
    df = pd.DataFrame(res["results"]).pivot_table(index=["task", "metric"], columns="method",
                                                  values="value", sort=False)  # fmt: skip
    base = [b for b in BASELINES if b in df.columns]
    for name in res["models"]:
        if name in df.columns and base:
            df[f"{name} - best baseline"] = df[name] - df[base].max(axis=1)
    order = [*res["models"], *base]
    margins = [c for c in df.columns if c.endswith(" - best baseline")]
    return df[[c for c in order if c in df.columns] + margins]


def markdown(df: pd.DataFrame) -> str:
    """The table as GitHub markdown (values to 3 decimals)."""
    head = ["task", "metric", *map(str, df.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, metric), row in df.iterrows():
        cells = [f"{v:.3f}" if pd.notna(v) else "" for v in row]
        lines.append("| " + " | ".join([str(task), str(metric), *cells]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="a trained run or encoder folder (repeatable)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="write the table as markdown here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    res = run(args)
    df = table(res)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.round(3).to_string())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(df))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
