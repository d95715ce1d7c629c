"""``biofm eval``: evaluate embedding tables (``eval knn EMB.parquet --label COLUMN``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biofm.core.errors import BadInputError
from biofm.eval.knn import evaluate_knn
from biofm.io.embeddings import read_embeddings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``eval`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "eval", help="evaluate embeddings", description="Evaluate embedding tables."
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    parser.set_defaults(func=lambda _args: _print_help(parser))
    knn = sub.add_parser(
        "knn",
        help="1-NN macro-F1 and k-NN top-1 accuracy under cross-validation",
        description="Nearest-neighbour probes (cosine) on an embedding parquet table.",
    )
    knn.add_argument("embeddings", type=Path, metavar="EMB.parquet")
    knn.add_argument("--label", required=True, metavar="COLUMN", help="class label column")
    knn.add_argument(
        "--group", metavar="COLUMN", help="keep each group in one fold (plate, batch...)"
    )
    knn.add_argument("--k", type=int, default=20, help="neighbours for k-NN (default 20)")
    knn.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    knn.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default 0)")
    knn.add_argument(
        "--out", type=Path, help="results JSON (default: <stem>.knn_<label>.json beside EMB)"
    )
    knn.set_defaults(func=run_knn)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _column(meta: pd.DataFrame, name: str | None, flag: str, where: str) -> np.ndarray | None:
    if name is None:
        return None
    if name not in meta.columns:
        available = ", ".join(map(str, meta.columns)) or "(none)"
        raise BadInputError(
            f"no column {name!r} for {flag}",
            f"use one of the metadata columns: {available}",
            where,
        )
    return meta[name].to_numpy()


def default_out(path: Path, label: str) -> Path:
    """``<stem>.knn_<label>.json`` next to the embedding table."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    return path.with_name(f"{path.stem}.knn_{safe}.json")


def run_knn(args: argparse.Namespace) -> int:
    """Run both nearest-neighbour probes, print a table, write JSON."""
    where = str(args.embeddings)
    emb, meta = read_embeddings(args.embeddings)
    labels = _column(meta, args.label, "--label", where)
    groups = _column(meta, args.group, "--group", where)
    assert labels is not None
    keep = ~pd.isna(labels)
    if groups is not None:
        keep &= ~pd.isna(groups)
    if not keep.all():
        log.warning("skipping %d rows with no label/group", int((~keep).sum()))
    results = evaluate_knn(
        emb[keep],
        labels[keep],
        groups=None if groups is None else groups[keep],
        k=args.k,
        n_splits=args.folds,
        seed=args.seed,
    )
    results = {
        "embeddings": str(args.embeddings),
        "label": args.label,
        "group": args.group,
        "n_skipped_rows": int((~keep).sum()),
        **results,
    }
    out = args.out or default_out(args.embeddings, args.label)
    _write_json(out, results)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def format_table(r: dict[str, Any]) -> str:
    """Small text table of the results."""
    head = f"{r['n_samples']} samples, {r['n_classes']} classes, {r['n_splits']} folds" + (
        " (grouped)" if r.get("grouped") else ""
    )
    rows = [
        ("1-NN macro-F1", r["one_nn_macro_f1"]),
        (f"{r['knn_top1']['k']}-NN top-1 acc", r["knn_top1"]),
    ]
    lines = [head, f"{'metric':<18}{'mean':>8}{'std':>8}"]
    lines += [f"{name:<18}{m['mean']:>8.3f}{m['std']:>8.3f}" for name, m in rows]
    return "\n".join(lines)


def _write_json(out: Path, data: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, out)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
