"""Text tables printed by ``biofm eval``: one line per metric (mean, std) or per block."""

from __future__ import annotations

from typing import Any


def head_line(r: dict[str, Any], what: str) -> str:
    """``"<n> samples, <what>, <k> folds"``, with ``(grouped)`` when the folds kept groups."""
    grouped = " (grouped)" if r.get("grouped") else ""
    return f"{r['n_samples']} samples, {what}, {r['n_splits']} folds{grouped}"


def metric_table(head: str, rows: list[tuple[str, dict[str, Any]]]) -> str:
    """``head``, then one ``name  mean  std`` line per (name, {"mean", "std"}) row."""
    lines = [head, f"{'metric':<18}{'mean':>8}{'std':>8}"]
    lines += [f"{name:<18}{m['mean']:>8.3f}{m['std']:>8.3f}" for name, m in rows]
    return "\n".join(lines)


def format_blocks_table(r: dict[str, Any]) -> str:
    """One line per block: dim, primary and secondary metric mean +- std; best block marked."""
    p, s = r["metric"], r["secondary_metric"]
    lines = [
        head_line(r, f"{r['n_classes']} classes") + f", probe {r['probe']}",
        f"{'block':>6}{'dim':>6}{p:>24}{s:>20}",
    ]
    for row in r["blocks"]:
        mark = "  <- best" if row["block"] == r["best_block"] else ""
        a, b = row[p], row[s]
        lines.append(
            f"{row['block']!s:>6}{row['dim']:>6}{a['mean']:>16.3f} +- {a['std']:.3f}"
            f"{b['mean']:>12.3f} +- {b['std']:.3f}{mark}"
        )
    lines.append(f"best block: {r['best_block']} ({p} {r['best_score']:.3f})")
    return "\n".join(lines)


def format_table(r: dict[str, Any]) -> str:
    """Small text table of the results."""
    rows = [
        ("1-NN macro-F1", r["one_nn_macro_f1"]),
        (f"{r['knn_top1']['k']}-NN top-1 acc", r["knn_top1"]),
    ]
    return metric_table(head_line(r, f"{r['n_classes']} classes"), rows)
