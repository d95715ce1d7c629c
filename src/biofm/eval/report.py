"""Evaluation report of an embedding table: ``report.md``, ``report.html`` and ``report.json``.

``write_report`` computes, on the same stratified (with ``group``: stratified grouped) folds:

1. a summary table: images, classes, 1-NN macro-F1 and k-NN top-1 (``evaluate_knn``), linear
   probe accuracy and macro-F1 (``linear_classification``);
2. a 2-D projection (UMAP when umap-learn is installed, else PCA) coloured by the label and, with
   ``plate``, by plate: does the embedding group images by biology or by plate?
3. the row-normalised confusion matrix of the linear probe's out-of-fold predictions;
4. with per-block features, the 1-NN macro-F1 of each block (``block_probe``), best block marked.

Each plot comes with a short "how to read this" paragraph. The HTML file is self-contained (PNG
images inlined as base64, inline CSS); the PNG files are written beside it. Seeded throughout.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix

from biofm.core.errors import BadInputError
from biofm.eval import plots
from biofm.eval.blocks import block_probe
from biofm.eval.knn import evaluate_knn
from biofm.eval.linear import linear_classification

MAX_POINTS = 20_000
"""Rows drawn in the projection; larger tables are subsampled (seeded)."""

Item = tuple[Any, ...]
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222;line-height:1.45}table{border-collapse:collapse;margin:1rem 0}"
    "th,td{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}th{background:#f2f2f2}"
    "img{max-width:100%;height:auto}.read{background:#f7f9fc;border-left:4px solid #4a78c2;"
    "padding:.5rem 1rem}"
)


def out_of_fold_predictions(
    emb: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    n_splits: int = 5,
    seed: int = 0,
    c: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """True and out-of-fold predicted class indices, and the class names, of the linear probe
    (``linear_classification``'s folds and pipeline)."""
    oof = linear_classification(emb, labels, groups, n_splits, seed, c,
                                return_predictions=True)["predictions"]  # fmt: skip
    return oof["y"], oof["pred"], oof["classes"]


def normalised_confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix with each row (true class) divided by its count: rows sum to 1."""
    counts = confusion_matrix(y, pred, labels=np.arange(n_classes)).astype(np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def _need(meta: pd.DataFrame, name: str | None, what: str, where: str | None) -> None:
    if name is not None and name not in meta.columns:
        available = ", ".join(map(str, meta.columns)) or "(none)"
        raise BadInputError(
            f"no column {name!r} for {what}", f"use one of the metadata columns: {available}", where
        )


def write_report(
    emb: ArrayLike,
    meta: pd.DataFrame,
    out_dir: str | Path,
    label: str,
    plate: str | None = None,
    group: str | None = None,
    blocks: Mapping[int, ArrayLike] | None = None,
    title: str = "biofm evaluation report",
    n_splits: int = 5,
    seed: int = 0,
    k: int = 20,
    c: float = 1.0,
    where: str | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNG plots into ``out_dir``.

    ``label``, ``plate`` and ``group`` name columns of ``meta`` (one row per embedding row);
    rows with no label (or no group) are skipped and counted. ``blocks`` maps block index to
    per-block features (``read_blocks``). Returns the numbers written to ``report.json``."""
    for name, what in ((label, "label"), (plate, "plate"), (group, "group")):
        _need(meta, name, what, where)
    x_all = np.asarray(emb, dtype=np.float32)
    keep = ~pd.isna(meta[label].to_numpy())
    if group is not None:
        keep &= ~pd.isna(meta[group].to_numpy())
    x, y = x_all[keep], meta[label].to_numpy()[keep]
    g = None if group is None else meta[group].to_numpy()[keep]
    knn = evaluate_knn(x, y, groups=g, k=k, n_splits=n_splits, seed=seed)
    lin = linear_classification(x, y, g, n_splits=n_splits, seed=seed, c=c,
                                return_predictions=True)  # fmt: skip
    oof = lin.pop("predictions")  # one fit gives the scores and the confusion matrix
    classes = oof["classes"]
    conf = normalised_confusion(oof["y"], oof["pred"], len(classes))
    blk = None
    if blocks:
        feats = {int(b): np.asarray(v)[keep] for b, v in blocks.items()}
        blk = block_probe(feats, y, g, "knn", n_splits, seed, k=k, c=c)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(x))
    if len(rows) > MAX_POINTS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_POINTS, replace=False))
    xy, method = plots.project_2d(x[rows], seed=seed)
    panels = {label: y[rows]}
    if plate is not None:
        panels[plate] = np.asarray(meta[plate].to_numpy()[keep][rows], dtype=object)
    pngs = {"projection.png": plots.projection_figure(xy, panels, method)}
    pngs["confusion.png"] = plots.confusion_figure(conf, classes, "linear probe, out-of-fold")
    if blk is not None:
        rs = blk["blocks"]
        pngs["blocks.png"] = plots.block_curve_figure(
            [r["block"] for r in rs], [r[blk["metric"]]["mean"] for r in rs],
            [r[blk["metric"]]["std"] for r in rs], blk["best_block"], "1-NN macro-F1",
        )  # fmt: skip
    images = {name: plots.save_png(fig, out / name) for name, fig in pngs.items()}
    results: dict[str, Any] = {
        "title": title, "label": label, "plate": plate, "group": group,
        "n_images": len(x), "n_skipped_rows": int((~keep).sum()),
        "n_classes": knn["n_classes"], "classes": classes,
        "projection": {"method": method, "n_points": len(rows), "seed": seed},
        "knn": knn, "linear": lin,
        "confusion": {"classes": classes, "matrix": conf.tolist(), "normalised": "rows"},
        "blocks": blk, "files": ["report.md", "report.html", "report.json", *images],
    }  # fmt: skip
    items = _items(results)
    (out / "report.md").write_text(_markdown(items))
    (out / "report.html").write_text(_html(items, title, images))
    (out / "report.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    return results


def _pm(m: dict[str, Any]) -> str:
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def _items(r: dict[str, Any]) -> list[Item]:
    knn, lin, label = r["knn"], r["linear"], r["label"]
    folds = f"{knn['n_splits']} stratified folds"
    if r["group"]:
        folds += f", each {r['group']} kept whole in one fold"
    rows = [
        ["images", str(r["n_images"])],
        ["classes", f"{r['n_classes']} (chance ≈ {1 / r['n_classes']:.3f})"],
        ["1-NN macro-F1", _pm(knn["one_nn_macro_f1"])],
        [f"{knn['knn_top1']['k']}-NN top-1 accuracy", _pm(knn["knn_top1"])],
        ["linear probe accuracy", _pm(lin["accuracy"])],
        ["linear probe macro-F1", _pm(lin["macro_f1"])],
        ["cross-validation", folds],
    ]
    if r["n_skipped_rows"]:
        rows.append(["rows skipped (no label/group)", str(r["n_skipped_rows"])])
    if knn["dropped_classes"]:
        rows.append(["classes dropped (1 image)", ", ".join(map(str, knn["dropped_classes"]))])
    method = r["projection"]["method"]
    how = method
    if method == "PCA":
        how += " (umap-learn is not installed: `pip install 'biofm[umap]'` for UMAP)"
    grouped = (
        f" The folds keep each {r['group']} whole, so every score is measured on {r['group']} "
        "values never seen in training and is not inflated by near-duplicate images."
        if r["group"]
        else ""
    )
    items: list[Item] = [
        ("h1", r["title"]),
        ("p", f"Label: {label}. Mean ± std over folds."),
        ("h2", "Summary"),
        ("table", ["measure", "value"], rows),
        ("read", "1-NN macro-F1: how often an image's most similar image has the same "
         f"{label}, averaged over classes so that rare classes count as much as common ones. "
         "k-NN top-1 uses a weighted vote of the nearest images; the linear probe trains a "
         "logistic regression on the embeddings. Compare each score with chance: near 1 means "
         f"the {label} is plainly readable from the embedding, near chance means it is not."
         + grouped),
        ("h2", "2-D projection"),
        ("p", f"Projection: {how}. {r['projection']['n_points']} images shown."),
        ("img", "projection.png", f"{method} of the embeddings"),
        ("read", _projection_text(label, r["plate"], method)),
        ("h2", "Confusion matrix (linear probe)"),
        ("img", "confusion.png", "row-normalised confusion matrix"),
        ("read", "Each row is a true class, each column a predicted class; a cell is the "
         "fraction of that row's images predicted as that column (out-of-fold: each image is "
         "predicted by a model that never saw it), so every row sums to 1. A dark diagonal "
         "means the classes are told apart. Dark cells off the diagonal show which classes are "
         "confused with each other, often biologically similar ones."),
    ]  # fmt: skip
    blk = r["blocks"]
    if blk is not None:
        items += [
            ("h2", "Score per block"),
            ("p", f"Best block: {blk['best_block']} (1-NN macro-F1 {blk['best_score']:.3f})."),
            ("img", "blocks.png", "score per block"),
            ("read", "Each point scores the features of one encoder block with the 1-NN probe "
             "on the same folds (shaded: ± std over folds). Early blocks hold low-level "
             "texture and intensity, late blocks more abstract features. The star marks the "
             "best block: when it is not the last one, that block's features (`biofm embed "
             "--blocks`) may serve this task better than the final embedding."),
        ]  # fmt: skip
    return items


def _projection_text(label: str, plate: str | None, method: str) -> str:
    text = (
        f"Each dot is one image, placed so that images with similar embeddings lie close "
        f"together; colours show the {label}."
    )
    if plate is not None:
        text += (
            f" Compare the two panels: if {label} colours form separate groups while {plate} "
            f"colours are mixed everywhere, the embedding captures biology. If the points group "
            f"by {plate} instead, a plate (batch) effect dominates; correct it before comparing "
            "conditions across plates."
        )
    if method == "PCA":
        text += (
            " PCA shows only the two directions of largest variance: classes that overlap here "
            "may still be apart in the full embedding, so trust the table over the picture."
        )
    return text


def _markdown(items: list[Item]) -> str:
    lines: list[str] = []
    for kind, *rest in items:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += [f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "read":
            lines += [f"**How to read this.** {rest[0]}", ""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
        elif kind == "table":
            header, rows = rest
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _html(items: list[Item], title: str, images: Mapping[str, bytes]) -> str:
    e = html.escape
    body: list[str] = []
    for kind, *rest in items:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "read":
            body.append(f'<p class="read"><strong>How to read this.</strong> {e(rest[0])}</p>')
        elif kind == "img":
            data = base64.b64encode(images[rest[0]]).decode("ascii")
            body.append(f'<img src="data:image/png;base64,{data}" alt="{e(rest[1])}">')
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            cells = "".join(
                "<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows
            )
            body.append(f"<table><tr>{head}</tr>{cells}</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
