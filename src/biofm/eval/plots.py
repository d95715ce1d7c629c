"""Plotting helpers shared by the reports (matplotlib, Agg backend, no display needed).

- ``project_2d``: a 2-D projection of embeddings, UMAP when umap-learn is installed, else PCA;
- ``scatter_categories``: one colour per category on an axis, with a capped legend;
- ``projection_figure``, ``confusion_figure``, ``block_curve_figure``: the report's figures;
- ``save_png``: write a figure as PNG and return its bytes (for embedding in HTML).

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, so no global
pyplot state or interactive backend is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Values = Sequence[Any] | np.ndarray
"""One value per point (category names, plate ids...)."""

MAX_LEGEND = 20
"""Categories named in a legend; the rest are counted in one last entry."""


def project_2d(emb: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection of L2-normalised rows: UMAP when umap-learn is installed, else PCA.

    Returns the (n, 2) coordinates and the method name ("UMAP" or "PCA")."""
    x = np.asarray(emb, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    try:
        import umap
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x), "PCA"
    return np.asarray(umap.UMAP(random_state=seed).fit_transform(x)), "UMAP"


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg backend."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _sort_key(name: str) -> tuple[int, float, str]:
    try:
        number = float(name)
    except ValueError:
        return (1, 0.0, name)
    return (0, number, "") if np.isfinite(number) else (2, 0.0, name)


def scatter_categories(ax: Any, xy: np.ndarray, values: Values, title: str) -> None:
    """Scatter ``xy`` with one colour per distinct value (numeric values in numeric order)."""
    labels = np.asarray([str(v) for v in values])
    cats = sorted(set(labels.tolist()), key=_sort_key)
    cmap = _colours(len(cats))
    for i, cat in enumerate(cats):
        m = labels == cat
        name = cat if i < MAX_LEGEND else None
        ax.scatter(xy[m, 0], xy[m, 1], s=7, alpha=0.75, color=cmap[i], label=name, linewidths=0)
    if len(cats) > MAX_LEGEND:
        ax.scatter([], [], s=0, label=f"... {len(cats) - MAX_LEGEND} more")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20"
    cmap = colormaps[name]
    return [cmap(i % cmap.N) for i in range(n)]


def projection_figure(xy: np.ndarray, panels: Mapping[str, Values], method: str) -> Figure:
    """One panel per metadata column (e.g. label, plate) on the same 2-D coordinates."""
    fig = new_figure(5.2 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (column, values) in zip(axes, panels.items(), strict=True):
        scatter_categories(ax, xy, values, f"{method} coloured by {column}")
        ax.set_xlabel(f"{method} 1", fontsize=8)
        ax.set_ylabel(f"{method} 2", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, classes: Sequence[Any], title: str) -> Figure:
    """Row-normalised confusion matrix: true class down, predicted class across."""
    n = len(classes)
    size = min(3.0 + 0.45 * n, 14.0)
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    names = [str(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                colour = "white" if matrix[i, j] > 0.6 else "black"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color=colour)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def block_curve_figure(
    blocks: Sequence[int], mean: Sequence[float], std: Sequence[float], best: int, metric: str
) -> Figure:
    """Score per block (mean +- std over folds) with the best block marked."""
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    x = np.asarray(blocks, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    ax.plot(x, m, marker="o", color="tab:blue", label=metric)
    ax.fill_between(x, m - s, m + s, color="tab:blue", alpha=0.2, label="+- std over folds")
    i = list(blocks).index(best)
    ax.scatter([x[i]], [m[i]], marker="*", s=220, color="tab:red", zorder=3,
               label=f"best block {best} ({m[i]:.3f})")  # fmt: skip
    ax.set_xticks(x)
    ax.set_xlabel("block index (0 = first block)")
    ax.set_ylabel(metric)
    ax.set_ylim(min(0.0, float((m - s).min())), max(1.02, float((m + s).max())))
    ax.set_title(f"{metric} per block", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 110) -> bytes:
    """Write ``fig`` to ``path`` as PNG and return the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight", metadata={"Software": None})
    return path.read_bytes()
