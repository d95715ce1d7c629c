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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from biofm.data.norm_fit import fit_sample_stats
from biofm.data.norm_stats import NormStats
from biofm.eval.baselines import PixelPCA, handcrafted_features, untrained_like
from biofm.eval.knn import evaluate_knn
from biofm.eval.linear import linear_classification, linear_regression
from biofm.eval.profiling import replicate_average_precision
from biofm.eval.sample_embed import (
    embed_samples,
    embed_samples_blocks,
    model_input_size,
    sample_group,
)
from biofm.eval.tasks import TASKS, Task, build_tasks
from biofm.release import load_model

BASELINES = ("untrained", "handcrafted", "pixel_pca")


def task_stats(task: Task, scope: str) -> NormStats | None:
    """Normalisation statistics for the task's images: scope ``source`` fits them per plate
    when the images carry one, else over the task's images (its one source)."""
    if scope == "image":
        return None
    plates = {s.meta.get("plate") for s in task.images}
    by = "plate" if None not in plates else None
    return fit_sample_stats(task.images, "source", group_by=by)


def features(method: str, task: Task, models: dict[str, Any], stats: NormStats | None,
             blocks: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """{"": (N, D)} features of the task's images by ``method`` (plus {"block k": ...} per
    block of an encoder when ``blocks``); every method sees the same normalisation."""
    if method not in ("handcrafted", "pixel_pca"):
        return encoder_features(models[method], task, stats, blocks)
    ranges = [None if stats is None else stats.ranges(s.channels, sample_group(s, stats))
              for s in task.images]  # fmt: skip
    pixels = [s.pixels for s in task.images]
    if method == "handcrafted":
        return {"": np.stack([handcrafted_features(p, ranges=r)
                              for p, r in zip(pixels, ranges, strict=True)])}  # fmt: skip
    return {"": PixelPCA(32, 32).fit(pixels, ranges).transform(pixels, ranges)}


def encoder_features(model: Any, task: Task, stats: NormStats | None, blocks: bool
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """An encoder's pooled embedding (and per-block features) of the task's images."""
    size = model_input_size(model)
    out = {"": embed_samples(model, task.images, input_size=size, norm_stats=stats)}
    if blocks and hasattr(model, "forward_intermediates"):
        per = embed_samples_blocks(model, task.images, input_size=size, norm_stats=stats)
        out.update({f"block {k}": v for k, v in per.items()})
    return out


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance over the task's images (label-free, the same for
    every method), so no feature dominates a distance by its units."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def pooled_regression(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Out-of-fold ridge predictions (folds grouped; penalty chosen inside each training fold),
    pooled: R² and Spearman rank correlation with the target."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold

    pred = np.zeros_like(y, dtype=np.float64)
    for tr, te in GroupKFold(n_splits=min(5, len(set(groups)))).split(x, y, groups):
        pred[te] = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(x[tr], y[tr]).predict(x[te])
    r2 = 1.0 - float(((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return {"ridge_r2_pooled": r2, "spearman": float(spearmanr(pred, y)[0])}


def split_scores(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Fixed split (train plates -> held-out plate): features standardised on the training
    rows; 1-NN (cosine) macro-F1 and accuracy, and logistic-regression accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit(x[train]).transform(x)
    u = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)
    nn = y[train][np.argmax(u[~train] @ u[train].T, axis=1)]
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(z[train], y[train])
    return {"1nn_macro_f1": float(f1_score(y[~train], nn, average="macro")),
            "1nn_accuracy": float((nn == y[~train]).mean()),
            "linear_accuracy": float((clf.predict(z[~train]) == y[~train]).mean())}  # fmt: skip


def score(task: Task, x: np.ndarray, seed: int) -> dict[str, float]:
    """The task's metrics of features ``x`` (means over folds, or the fixed split)."""
    if task.kind == "classification" and task.train is not None:
        return split_scores(x, task.target, task.train)
    x = standardise(x)
    if task.kind == "regression" and task.info.get("pooled") and task.groups is not None:
        return pooled_regression(x, task.target.astype(np.float64), task.groups)
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


def seen_sources(model: Any) -> set[str] | None:
    """The corpus sources a model was pretrained on (its card's training sources, or the
    source column of its training manifest); None when unknown."""
    card = dict(getattr(model, "weights_card", {}) or {})
    sources = (card.get("training") or {}).get("sources")
    if sources:
        return {str(s["source"]) for s in sources}
    manifest = card.get("training_manifest")
    if manifest and Path(manifest).is_file():
        return set(pd.read_csv(manifest, usecols=["source"])["source"].astype(str))
    return None


def saw(model: Any, task: Task) -> bool | None:
    """Whether ``model`` was pretrained on images of the task's source (None: unknown)."""
    seen = seen_sources(model)
    if not task.source:
        return False
    return None if seen is None else bool(seen & set(task.source.split(",")))


def pick_unseen(names: list[str], models: dict[str, Any], task: Task) -> str | None:
    """The first of ``names`` whose pretraining excluded the task's source."""
    return next((n for n in names if saw(models[n], task) is False), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    models: dict[str, Any] = {}
    lso = {n: p.split(",") for n, _, p in (s.partition("=") for s in args.lso)}
    for name, members in lso.items():
        for k, path in enumerate(members):
            models.setdefault(f"{name}[{k}]", load_model(path).eval())
        lso[name] = [f"{name}[{k}]" for k in range(len(members))]
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path or None).eval()
    if models:  # the first encoder's architecture (a leave-source-out member when given)
        models["untrained"] = untrained_like(next(iter(models.values())), seed=args.seed)
    rows = []
    for task in build_tasks(args.shared, tuple(args.tasks), seed=args.seed):
        stats = task_stats(task, args.norm)
        chosen = {n: pick_unseen(m, models, task) for n, m in lso.items()}
        used = {*[m for m in models if "[" not in m], *[c for c in chosen.values() if c]}
        for method in [*sorted(used), "handcrafted", "pixel_pca"]:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                feats = features(method, task, models, stats, blocks=args.blocks)
            names = [n for n, c in chosen.items() if c == method] or [method]
            for label in names:
                for part, x in feats.items():
                    for metric, value in score(task, x, args.seed).items():
                        rows.append({"task": task.name, "metric": metric,
                                     "method": label + (f" {part}" if part else ""),
                                     "model": method, "value": value, "n": len(task.images),
                                     "dim": int(x.shape[1]), "norm": args.norm,
                                     "saw_task_source": saw(models[method], task)
                                     if method in models and method != "untrained"
                                     else False})  # fmt: skip
            print(f"  {task.name:18s} {method:14s} {time.perf_counter() - t0:.1f} s",
                  flush=True)  # fmt: skip
    return {
        "benchmark": "tasks", "seed": args.seed, "norm": args.norm,
        "models": dict((s.partition("=")[0], s.partition("=")[2]) for s in args.model),
        "leave_source_out": {n: m for n, m in lso.items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "results": rows,
    }  # fmt: skip


def table(res: dict[str, Any]) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """Rows (task, metric), columns methods (and each encoder's best block, ``NAME best
    block``), plus each encoder's margin over the best baseline (a difference: R² can be
    negative, so a ratio would mislead); and the (task, method) cells whose encoder saw the
    task's source in pretraining."""
    raw = pd.DataFrame(res["results"])
    df = raw.pivot_table(index=["task", "metric"], columns="method", values="value",
                         sort=False)  # fmt: skip
    leaked = {(r.task, r.method) for r in raw.itertuples() if r.saw_task_source is not False}
    encoders = [*res["leave_source_out"], *res["models"]]
    for name in encoders:
        cols = [c for c in df.columns if c.startswith(f"{name} block ")]
        if cols:
            df[f"{name} best block"] = df[cols].max(axis=1)
    base = [b for b in BASELINES if b in df.columns]
    for name in encoders:
        if name in df.columns and base:
            df[f"{name} - best baseline"] = df[name] - df[base].max(axis=1)
    order = [c for n in encoders for c in (n, f"{n} best block")] + base
    margins = [c for c in df.columns if c.endswith(" - best baseline")]
    return df[[c for c in order if c in df.columns] + margins], leaked


def markdown(df: pd.DataFrame, leaked: set[tuple[str, str]] = frozenset()) -> str:  # type: ignore[assignment]
    """The table as GitHub markdown (values to 3 decimals; † marks an encoder that saw the
    task's source in pretraining)."""
    head = ["task", "metric", *map(str, df.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, metric), row in df.iterrows():
        cells = [(f"{v:.3f}" + (" †" if (task, str(col).removesuffix(" best block"))
                                 in leaked else "")) if pd.notna(v) else ""
                 for col, v in row.items()]  # fmt: skip
        lines.append("| " + " | ".join([str(task), str(metric), *cells]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="an encoder: shipped name, release/encoder folder or run (repeatable; "
                    "NAME= alone is the recommended shipped model)")
    ap.add_argument("--lso", action="append", default=[], metavar="NAME=PATH,PATH,...",
                    help="leave-source-out: encoders pretrained on corpora that each exclude "
                    "some sources; each task is scored with the first that never saw its source")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--norm", choices=("source", "image"), default="source",
                    help="intensity scaling for every method (default: statistics of the "
                    "task's source, per plate where there are plates)")
    ap.add_argument("--blocks", action="store_true", help="also probe every encoder block")
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="write the table as markdown here")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                    help="tabulate saved results instead of running (several are merged)")
    return ap.parse_args(argv)


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """Several saved runs (e.g. tasks scored in two sessions) as one result."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = dict(runs[0])
    out["results"] = [r for run in runs for r in run["results"]]
    for key in ("models", "leave_source_out"):
        out[key] = {k: v for run in runs for k, v in run.get(key, {}).items()}
    out["merged_from"] = [str(p) for p in paths]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    res = merge(args.merge) if args.merge else run(args)
    df, leaked = table(res)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.round(3).to_string())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(df, leaked))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
