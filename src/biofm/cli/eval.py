"""``biofm eval``: probes of embedding tables (parquet or ``.zarr``).

``knn`` (1-NN macro-F1, k-NN top-1), ``linear`` (logistic regression), ``regress`` (ridge R^2 of a
numeric column) and ``blocks`` (a probe per block of ``biofm embed --blocks`` output). Each prints
a table and writes a JSON file (default ``<stem>.<probe>_<column>.json`` beside the table).
``report`` writes a markdown/HTML report with plots into a folder (default
``<stem>.report_<column>/`` beside the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

from biofm.cli.eval_tables import format_blocks_table, format_table, head_line, metric_table

# numpy, pandas and the probes load inside the run functions: building the parser stays light.
log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``eval`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "eval", help="evaluate embeddings", description="Evaluate embedding tables."
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    parser.set_defaults(func=lambda _args: _print_help(parser))
    knn = _add(
        sub,
        "knn",
        "1-NN macro-F1 and k-NN top-1 accuracy under cross-validation",
        "Nearest-neighbour probes (cosine) on an embedding table.",
        run_knn,
    )
    knn.add_argument("--k", type=int, default=20, help="neighbours for k-NN (default 20)")
    lin = _add(
        sub,
        "linear",
        "logistic-regression probe under cross-validation",
        "Logistic regression on standardised embeddings: accuracy and macro-F1, mean and "
        "std over stratified (with --group: stratified grouped) folds.",
        run_linear,
    )
    lin.add_argument("--c", type=float, default=1.0, help="inverse regularisation (default 1)")
    reg = _add(
        sub,
        "regress",
        "ridge regression probe of a numeric column (R^2, MAE)",
        "Ridge regression of a numeric metadata column (e.g. nucleus count) on "
        "standardised embeddings: R^2 and MAE over (grouped) K-fold CV.",
        run_regress,
        column="--target",
    )
    reg.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (default 1)")
    reg.add_argument("--log1p", action="store_true", help="regress log(1 + target) (counts)")
    blk = _add(
        sub,
        "blocks",
        "score each block's features and report the best block",
        "Per-block probe of a table written by 'biofm embed --blocks'.",
        run_blocks,
    )
    blk.add_argument(
        "--probe",
        choices=("knn", "linear"),
        default="knn",
        help="knn: 1-NN macro-F1; linear: logistic-regression macro-F1",
    )
    blk.add_argument("--k", type=int, default=20, help="neighbours for k-NN (default 20)")
    blk.add_argument("--c", type=float, default=1.0, help="inverse regularisation (linear)")
    rep = _add(
        sub,
        "report",
        "markdown/HTML report: scores, 2-D projection, confusion matrix, per-block curve",
        "Report of an embedding table for a quick look: summary table (k-NN and linear "
        "probes), 2-D projection coloured by label and plate, confusion matrix of the linear "
        "probe, and the score per block when the table holds blocks.",
        run_report,
        out_help="report folder (default: <stem>.report_<column>/ beside EMB)",
    )
    rep.add_argument("--plate", metavar="COLUMN", help="also colour the projection by this column")
    rep.add_argument("--title", default="biofm evaluation report", help="report title")
    rep.add_argument("--k", type=int, default=20, help="neighbours for k-NN (default 20)")
    rep.add_argument("--c", type=float, default=1.0, help="inverse regularisation (linear)")


def _add(
    sub: Any,
    name: str,
    help_: str,
    description: str,
    func: Any,
    column: str = "--label",
    out_help: str | None = None,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description)
    p.add_argument("embeddings", type=Path, metavar="EMB", help="embedding .parquet or .zarr")
    what = "numeric column to predict" if column == "--target" else "class label column"
    p.add_argument(column, dest="label", required=True, metavar="COLUMN", help=what)
    p.add_argument(
        "--group", metavar="COLUMN", help="keep each group in one fold (plate, well, batch...)"
    )
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default 0)")
    out_help = out_help or f"results JSON (default: <stem>.{name}_<column>.json beside EMB)"
    p.add_argument("--out", type=Path, help=out_help)
    p.set_defaults(func=func, probe_name=name, column_flag=column)
    return p


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _column(meta: pd.DataFrame, name: str | None, flag: str, where: str) -> np.ndarray | None:
    if name is None:
        return None
    if name not in meta.columns:
        from biofm.core.errors import BadInputError

        available = ", ".join(map(str, meta.columns)) or "(none)"
        raise BadInputError(
            f"no column {name!r} for {flag}",
            f"use one of the metadata columns: {available}",
            where,
        )
    return meta[name].to_numpy()


def default_out(path: Path, label: str, kind: str = "knn") -> Path:
    """``<stem>.<kind>_<label>.json`` next to the embedding table."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    return path.with_name(f"{path.stem}.{kind}_{safe}.json")


def _load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Embeddings, label and group values of the rows that have both, and that row mask."""
    import pandas as pd

    from biofm.io.embeddings import read_embeddings

    where = str(args.embeddings)
    emb, meta = read_embeddings(args.embeddings)
    labels = _column(meta, args.label, args.column_flag, where)
    groups = _column(meta, args.group, "--group", where)
    assert labels is not None
    keep = ~pd.isna(labels)
    if groups is not None:
        keep &= ~pd.isna(groups)
    if not keep.all():
        log.warning("skipping %d rows with no label/group", int((~keep).sum()))
    return emb[keep], labels[keep], None if groups is None else groups[keep], keep


def _finish(args: argparse.Namespace, results: dict[str, Any], keep: np.ndarray, table: str) -> int:
    results = {
        "embeddings": str(args.embeddings),
        "label" if args.column_flag == "--label" else "target": args.label,
        "group": args.group,
        "n_skipped_rows": int((~keep).sum()),
        **results,
    }
    out = args.out or default_out(args.embeddings, args.label, args.probe_name)
    _write_json(out, results)
    print(table)
    print(f"wrote {out}")
    return 0


def run_knn(args: argparse.Namespace) -> int:
    """Run both nearest-neighbour probes, print a table, write JSON."""
    from biofm.eval.knn import evaluate_knn

    emb, labels, groups, keep = _load(args)
    results = evaluate_knn(
        emb, labels, groups=groups, k=args.k, n_splits=args.folds, seed=args.seed
    )
    return _finish(args, results, keep, format_table(results))


def run_linear(args: argparse.Namespace) -> int:
    """Logistic-regression probe, printed table and JSON."""
    from biofm.eval.linear import linear_classification

    emb, labels, groups, keep = _load(args)
    res = linear_classification(emb, labels, groups, n_splits=args.folds, seed=args.seed, c=args.c)
    head = head_line(res, f"{res['n_classes']} classes")
    rows = [
        ("accuracy", res["accuracy"]),
        ("balanced accuracy", res["balanced_accuracy"]),
        ("macro-F1", res["macro_f1"]),
    ]
    return _finish(args, res, keep, metric_table(head, rows))


def run_regress(args: argparse.Namespace) -> int:
    """Ridge regression probe of a numeric column, printed table and JSON."""
    import numpy as np

    from biofm.core.errors import BadInputError
    from biofm.eval.linear import linear_regression

    emb, target, groups, keep = _load(args)
    try:
        y = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise BadInputError(
            f"column {args.label!r} is not numeric",
            "pass a numeric column to --target (counts, areas...)",
            str(args.embeddings),
        ) from err
    if args.log1p:
        if (y < 0).any():
            raise BadInputError(
                f"--log1p needs a non-negative target; {args.label!r} has negative values",
                "drop --log1p",
                str(args.embeddings),
            )
        y = np.log1p(y)
    res = linear_regression(
        emb, y, n_splits=args.folds, seed=args.seed, alpha=args.alpha, groups=groups
    )
    res["log1p"] = bool(args.log1p)
    rows = [("R^2", res["r2"]), ("MAE", res["mae"])]
    return _finish(args, res, keep, metric_table(head_line(res, f"target {args.label}"), rows))


def run_blocks(args: argparse.Namespace) -> int:
    """Probe each block of a ``biofm embed --blocks`` table; table of blocks and best block."""
    from biofm.core.errors import BadInputError
    from biofm.eval.blocks import block_probe
    from biofm.io.embeddings import read_blocks

    _, labels, groups, keep = _load(args)
    blocks = read_blocks(args.embeddings)
    if not blocks:
        raise BadInputError(
            "the table has no per-block features",
            "embed with `biofm embed ... --blocks` first",
            str(args.embeddings),
        )
    feats = {k: v[keep] for k, v in blocks.items()}
    res = block_probe(feats, labels, groups, args.probe, args.folds, args.seed, k=args.k, c=args.c)
    return _finish(args, res, keep, format_blocks_table(res))


def run_report(args: argparse.Namespace) -> int:
    """Write report.md, report.html, report.json and PNG plots; print the summary table."""
    from biofm.eval.report import write_report
    from biofm.io.embeddings import read_blocks, read_embeddings

    where = str(args.embeddings)
    emb, meta = read_embeddings(args.embeddings)
    for name, flag in ((args.label, "--label"), (args.plate, "--plate"), (args.group, "--group")):
        _column(meta, name, flag, where)
    out = args.out or default_out(args.embeddings, args.label, "report").with_suffix("")
    opts = {"plate": args.plate, "group": args.group, "title": args.title, "where": where}
    cv = {"n_splits": args.folds, "seed": args.seed, "k": args.k, "c": args.c}
    blocks = read_blocks(args.embeddings) or None
    res = write_report(emb, meta, out, args.label, blocks=blocks, **opts, **cv)
    lin = res["linear"]
    rows = [("linear accuracy", lin["accuracy"]), ("linear macro-F1", lin["macro_f1"])]
    print(format_table(res["knn"]))
    print("\n".join(f"{n:<18}{m['mean']:>8.3f}{m['std']:>8.3f}" for n, m in rows))
    print(f"projection: {res['projection']['method']}")
    if res["blocks"] is not None:
        print(f"best block: {res['blocks']['best_block']}")
    print(f"wrote {out / 'report.html'} and {out / 'report.md'}")
    return 0


def _write_json(out: Path, data: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, out)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)
