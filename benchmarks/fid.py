"""BioFID statistics and Fréchet distance on CPU: 50 000 x 384 features per set.

Times, side by side on the same features, (a) biofm: streaming float64 ``FeatureStats``
(batches of ``--batch`` rows, Chan merging) and ``frechet_distance`` (symmetric
eigendecompositions), and (b) the pytorch-fid recipe: ``numpy.cov`` of all rows and
``scipy.linalg.sqrtm`` of Σ1Σ2. Prints a table with the speed ratio and the relative
difference of the two FD values; ``--json`` saves the result.

    python benchmarks/fid.py --json benchmarks/results/fid_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from scipy import linalg

from biofm.eval.frechet import FeatureStats, fd_from_stats


def make_features(n: int, d: int, seed: int, shift: float) -> np.ndarray:
    """Correlated Gaussian features (float32, as an encoder returns them)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n, d)) @ mix + shift
    return x.astype(np.float32)


def biofm_fd(x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, float, float]:
    """(FD, seconds for the statistics, seconds for the distance)."""
    t0 = time.perf_counter()
    stats = []
    for f in (x, y):
        s = FeatureStats(f.shape[1])
        for i in range(0, len(f), batch):
            s.update(f[i : i + batch])
        stats.append(s)
    t1 = time.perf_counter()
    fd = fd_from_stats(stats[0], stats[1])
    return fd, t1 - t0, time.perf_counter() - t1


def pytorch_fid_recipe(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The pytorch-fid computation (float64 activations, np.cov, scipy sqrtm of Σ1Σ2)."""
    t0 = time.perf_counter()
    moments = []
    for f in (x, y):
        a = f.astype(np.float64)
        moments.append((np.mean(a, axis=0), np.cov(a, rowvar=False)))
    t1 = time.perf_counter()
    (mu1, s1), (mu2, s2) = moments
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    covmean = np.real(covmean)
    fd = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return fd, t1 - t0, time.perf_counter() - t1


def run(args: argparse.Namespace) -> dict[str, Any]:
    x = make_features(args.n, args.dims, 1, 0.0)
    y = make_features(args.n, args.dims, 2, 0.05)
    ours, base = [], []
    biofm_fd(x[:2000], y[:2000], args.batch)  # warm-up (BLAS threads, page faults)
    for _ in range(args.reps):  # interleaved so drift hits both alike
        ours.append(biofm_fd(x, y, args.batch))
        base.append(pytorch_fid_recipe(x, y))
    o_stats = statistics.median(r[1] for r in ours)
    o_dist = statistics.median(r[2] for r in ours)
    b_stats = statistics.median(r[1] for r in base)
    b_dist = statistics.median(r[2] for r in base)
    o_total = statistics.median(r[1] + r[2] for r in ours)
    b_total = statistics.median(r[1] + r[2] for r in base)
    fd_o, fd_b = ours[0][0], base[0][0]
    return {
        "benchmark": "fid",
        "n_per_set": args.n,
        "dims": args.dims,
        "batch": args.batch,
        "reps": args.reps,
        "device": f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "biofm_stats_s": o_stats,
        "biofm_fd_s": o_dist,
        "biofm_total_s": o_total,
        "baseline_stats_s": b_stats,
        "baseline_fd_s": b_dist,
        "baseline_total_s": b_total,
        "fd_speedup": b_dist / o_dist,
        "total_speedup": b_total / o_total,
        "fd_biofm": fd_o,
        "fd_baseline": fd_b,
        "fd_rel_diff": abs(fd_o - fd_b) / abs(fd_b),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="features per set")
    p.add_argument("--dims", type=int, default=384)
    p.add_argument("--batch", type=int, default=5_000, help="rows per FeatureStats.update")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    r = run(args)
    print(
        f"FD of {r['n_per_set']} x {r['dims']} features per set, median of {r['reps']} "
        f"({r['device']})"
    )
    print(f"{'':24}{'statistics s':>14}{'distance s':>12}{'total s':>10}")
    print(
        f"{'biofm (eigh)':24}{r['biofm_stats_s']:14.3f}{r['biofm_fd_s']:12.3f}"
        f"{r['biofm_total_s']:10.3f}"
    )
    print(
        f"{'pytorch-fid (sqrtm)':24}{r['baseline_stats_s']:14.3f}{r['baseline_fd_s']:12.3f}"
        f"{r['baseline_total_s']:10.3f}"
    )
    print(
        f"speed-up: distance {r['fd_speedup']:.1f}x, total {r['total_speedup']:.2f}x; "
        f"FD {r['fd_biofm']:.6f} vs {r['fd_baseline']:.6f} (rel. diff {r['fd_rel_diff']:.1e})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
