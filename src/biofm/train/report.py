"""Markdown reports with plots (matplotlib, Agg backend; UMAP when umap-learn is installed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biofm.eval.plots import project_2d

log = logging.getLogger(__name__)


def scatter_grid(
    embs: dict[str, np.ndarray], meta: pd.DataFrame, colour_by: list[str], path: Path
) -> str:
    """One row per embedding set, one column per metadata column; returns the method name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(embs), len(colour_by), figsize=(4.2 * len(colour_by), 3.8 * len(embs)), squeeze=False
    )
    method = "PCA"
    for r, (name, emb) in enumerate(embs.items()):
        xy, method = project_2d(emb)
        for c, col in enumerate(colour_by):
            ax = axes[r][c]
            values = meta[col].astype(str).to_numpy()
            for v in sorted(set(values)):
                m = values == v
                ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, label=v)
            ax.set_title(f"{name}: {method} by {col}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.legend(fontsize=6, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return method


def write_quickstart_report(
    out: Path, results: dict[str, Any], embs: dict[str, np.ndarray], meta: pd.DataFrame
) -> Path:
    method = scatter_grid(embs, meta, ["treatment", "experiment", "plate"], out / "embedding.png")
    p, r = results["knn_accuracy_pretrained"], results["knn_accuracy_random_init"]
    lines = [
        "# biofm quickstart report",
        "",
        "**The data is synthetic**: procedurally generated cells, not real microscopy. It checks "
        "that the whole path works (images -> pretraining -> embeddings -> evaluation), not how "
        "well a model transfers to real images.",
        "",
        f"- images: {results['n_images']} in {len(results['experiments'])} experiments "
        f"({', '.join(f'{k}: {v}' for k, v in results['experiments'].items())}) with different "
        "channel sets (2, 3 and 5 channels)",
        f"- treatments: {results['n_treatments']} (chance = {results['chance']:.2f})",
        f"- model: {results['model']} {results['model_kwargs']}, DINO, "
        f"{results['train_steps']} steps in {results['seconds_pretraining']} s",
        "",
        "| encoder | k-NN top-1 (treatment) | 1-NN macro-F1 |",
        "|---|---|---|",
        f"| pretrained (DINO) | {p:.3f} | {results['one_nn_macro_f1_pretrained']:.3f} |",
        f"| same architecture, random init | {r:.3f} | "
        f"{results['one_nn_macro_f1_random_init']:.3f} |",
        "",
        "5-fold stratified cross-validation; cosine k-NN (k = 10, weighted votes).",
        "",
        f"![{method} of the embeddings](embedding.png)",
        "",
        f"{method} of the embeddings, coloured by treatment, experiment and plate.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
