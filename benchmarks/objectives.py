"""Pretraining objectives side by side: same data, model and sample budget, then probes.

Trains BioViT-Tiny/16 with each objective (DINO, MAE, SimCLR, WS-DINO, SupCon) on a corpus
manifest for the same number of steps and global batch, embeds an evaluation manifest with each
encoder and with the same architecture at random init (the baseline, embedded in the same run),
and scores: k-NN / 1-NN and a logistic-regression probe of a class column, ridge R^2 of numeric
columns. Prints a table with each score's difference from random init and saves JSON.

    biofm data index-shared ../shared/data --out corpus.csv
    biofm data index-shared ../shared/data --only dsb2018 --out dsb.csv
    python benchmarks/objectives.py --corpus corpus.csv --eval dsb.csv --steps 200 \
        --out runs/objectives --json benchmarks/results/objectives_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from biofm.data.dataset import IoLoader, add_image_sizes
from biofm.eval.embed import EmbedConfig, embed_manifest
from biofm.eval.knn import evaluate_knn
from biofm.eval.linear import linear_classification, linear_regression
from biofm.io.manifest import read_manifest
from biofm.models.io import load_encoder_any
from biofm.models.registry import create_model

OBJECTIVES = ["dino", "mae", "simclr", "wsdino", "supcon"]
# variants: a name -> (objective, extra overrides)
VARIANTS = {
    "supcon_anyplate": ("supcon", ["weak.same_plate_negatives=false"]),
    "supcon_w0": ("supcon", ["weak.instance_weight=0"]),
    "supcon_anyplate_w0": ("supcon", ["weak.same_plate_negatives=false",
                                      "weak.instance_weight=0"]),
}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "biovit_tiny_shared.yaml"


def sized_corpus(corpus: Path, out: Path) -> Path:
    """The corpus with height/width columns (so each run skips measuring the fields)."""
    df = read_manifest(corpus)
    if {"height", "width"} <= set(df.columns):
        return corpus
    target = out / "corpus_sized.csv"
    if not target.is_file():
        df = add_image_sizes(df, IoLoader(corpus.parent))
        df["paths"] = [p if Path(p).is_absolute() else str((corpus.parent / p).resolve())
                       for p in df["paths"].astype(str)]
        df.to_csv(target, index=False)
    return target


def train(name: str, corpus: Path, out: Path, steps: int, threads: int,
          extra: list[str], config: Path) -> dict[str, Any]:
    run = out / name
    if (run / "encoder").is_dir():
        return {"objective": name, "skipped": True}
    objective, variant = VARIANTS.get(name, (name, []))
    sets = [f"objective={objective}", f"optim.max_steps={steps}", f"run.threads={threads}",
            "run.progress=false", "data.num_workers=1", *extra, *variant]
    cmd = [sys.executable, "-m", "biofm", "train", "--config", str(config), "--data",
           str(corpus), "--out", str(run)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"training {name} failed (rc {rc}); see {out / name}.log")
    return {"objective": name, "train_s": time.perf_counter() - t0}


def batch_effect(emb: np.ndarray, rows: pd.DataFrame, batch: str, within: str | None
                 ) -> float:
    """k-NN accuracy of predicting the batch column (plate) inside each ``within`` group
    (experiment), averaged: how much batch signal the embedding carries (lower is better;
    chance is 1 / batches per group)."""
    scores = []
    parts = rows.groupby(within).indices.values() if within else [np.arange(len(rows))]
    for idx in parts:
        b = rows[batch].astype(str).to_numpy()[idx]
        if len(set(b)) > 1:
            scores.append(evaluate_knn(emb[idx], b, k=20)["knn_top1"]["mean"])
    return float(np.mean(scores)) if scores else float("nan")


def probes(model: torch.nn.Module, manifest: Path, cfg: EmbedConfig, label: str,
           targets: list[str], group: str | None, batch: tuple[str, str | None] | None = None,
           ) -> dict[str, Any]:
    t0 = time.perf_counter()
    emb, rows = embed_manifest(model, manifest, cfg)
    res: dict[str, Any] = {"embed_s": time.perf_counter() - t0, "n": len(rows)}
    y = rows[label].astype(str).to_numpy()
    groups = rows[group].astype(str).to_numpy() if group else None
    knn = evaluate_knn(emb, y, groups, k=20)
    lin = linear_classification(emb, y, groups)
    res[f"{label}_knn_top1"] = knn["knn_top1"]["mean"]
    res[f"{label}_1nn_f1"] = knn["one_nn_macro_f1"]["mean"]
    res[f"{label}_linear_bal_acc"] = lin["balanced_accuracy"]["mean"]
    for col in [t for t in targets if t in rows.columns]:
        r2 = linear_regression(emb, np.log(rows[col].astype(float).to_numpy()))["r2"]
        res[f"log_{col}_r2"] = r2["mean"]
    if batch is not None:
        res[f"{batch[0]}_knn_top1"] = batch_effect(emb, rows, *batch)
    res["emb_std"] = float(np.std(emb / np.linalg.norm(emb, axis=1, keepdims=True), axis=0)
                           .mean())
    return res


def final_logs(run: Path) -> dict[str, Any]:
    log = pd.read_csv(run / "log.csv")
    last = log.iloc[-1]
    keep = ["loss", "feature_std", "effective_rank", "samples_per_s"]
    return {f"final_{k}": float(last[k]) for k in keep if k in log.columns}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--label", default="modality")
    ap.add_argument("--group", help="keep each value of this column in one fold (plate...)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--batch", help="batch column (plate) whose k-NN accuracy measures the "
                    "batch effect left in the embeddings (lower is better)")
    ap.add_argument("--batch-within", help="score --batch inside each value of this column")
    ap.add_argument("--targets", nargs="*", default=["n_nuclei", "median_nucleus_area"])
    ap.add_argument("--objectives", nargs="*", default=OBJECTIVES)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="trainings run at the same time")
    ap.add_argument("--out", type=Path, default=Path("runs/objectives"))
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = sized_corpus(args.corpus, args.out)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        trained = list(pool.map(lambda o: train(o, corpus, args.out, args.steps, threads,
                                                args.extra, args.config), args.objectives))
    torch.set_num_threads(os.cpu_count() or 1)
    results: dict[str, Any] = {}
    batch = (args.batch, args.batch_within) if args.batch else None
    card: dict[str, Any] = {}
    for info in trained:
        run = args.out / info["objective"]
        model = load_encoder_any(run)
        card = model.weights_card
        cfg = EmbedConfig.for_model(model, progress=False)
        results[info["objective"]] = {**info, **final_logs(run),
                                      **probes(model, args.eval, cfg, args.label, args.targets,
                                                 args.group, batch)}
    torch.manual_seed(0)
    rand = create_model(card["model_name"], **card.get("model_kwargs", {}))
    cfg = EmbedConfig(tile=int(card["tile"]), input_size=int(card["input_size"]), progress=False)
    results["random_init"] = probes(rand, args.eval, cfg, args.label, args.targets,
                                    args.group, batch)
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "torch": torch.__version__, "device": "cpu"},
            "steps": args.steps, "config": args.config.name, "extra": args.extra,
            "label": args.label, "group": args.group,
            "results": results}, indent=2))


def report(results: dict[str, Any]) -> None:
    base = results["random_init"]
    cols = [k for k in base if k not in ("embed_s", "n", "emb_std")]
    print("| objective | " + " | ".join(cols) + " | train s | effective rank |")
    print("|---" * (len(cols) + 3) + "|")
    for name, r in results.items():
        cells = [f"{r[c]:.3f}" + ("" if name == "random_init" else f" ({r[c] - base[c]:+.3f})")
                 for c in cols]
        print(f"| {name} | " + " | ".join(cells) + f" | {r.get('train_s', 0):.0f} | "
              f"{r.get('final_effective_rank', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
