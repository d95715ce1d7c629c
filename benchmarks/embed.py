"""``biofm embed`` throughput vs the encoder's forward alone on the same tensors, in one run.

Two real inputs: the first 3,000 BBBC021 single-cell crops (68x68, 3 channels) and 20 fields
(every Cell Painting field of the shared corpus, then DSB2018 images). Each goes through the
public ``biofm.eval.embed_run.embed_path`` with the shipped ``biofm-vit-tiny`` (manifest CSV
in, parquet out) with ``--workers`` 0 and 2. A forward pre-hook keeps every PackedBatch the
model receives during the first run, so "model alone" times ``model(batch)`` under
``torch.no_grad`` on exactly those tensors (same tiles, input size and batch size).
Target: embed >= 80 % of model-alone images/s. ``--profile N`` also writes a cProfile of
``embed_path`` on N crops (workers 0).

    python benchmarks/embed.py --json benchmarks/results/embed_cpu.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

import biofm
from biofm.core import PackedBatch
from biofm.eval.embed import EmbedConfig
from biofm.eval.embed_run import embed_path
from biofm.io.corpus import shared_corpus_manifest
from biofm.io.manifest import write_manifest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CROP_CHANNELS = "DAPI;tubulin;actin"  # order from the source (README of the shared data)
FIELD_SOURCES = ("jump_BR00117006", "pediatric_BR00143976", "nf1_plate2", "dsb2018")


def crops_manifest(data: Path, n: int, out: Path) -> Path:
    """The first ``n`` rows of bbbc021_cycloheximide/index.csv as a manifest CSV."""
    index = pd.read_csv(data / "bbbc021_cycloheximide" / "index.csv").head(n)
    df = index.drop(columns=["path"]).assign(
        id=[f"bbbc021/{i}" for i in range(len(index))],
        paths=[str(data / "bbbc021_cycloheximide" / p) for p in index["path"]],
        channels=CROP_CHANNELS,
        source="bbbc021_cycloheximide",
    )
    return write_manifest(df, out)


def fields_manifest(data: Path, n: int, out: Path) -> Path:
    """``n`` fields: the Cell Painting fields first, then DSB2018 images, as a manifest CSV."""
    corpus = shared_corpus_manifest(data)
    parts = [corpus[corpus["source"] == s] for s in FIELD_SOURCES]
    df = pd.concat(parts, ignore_index=True).head(n)
    return write_manifest(df.dropna(axis=1, how="all"), out)


class Recorder:
    """Forward pre-hook keeping the batches a model receives while ``active``."""

    def __init__(self) -> None:
        self.batches: list[PackedBatch] = []
        self.active = False

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.active:
            self.batches.append(args[0])


def time_embed(model: nn.Module, manifest: Path, workers: int, batch_size: int,
               tmp: Path) -> float:
    """Wall-clock seconds of one ``embed_path`` run (manifest in, parquet out)."""
    cfg = EmbedConfig.for_model(model, batch_size=batch_size, num_workers=workers,
                                progress=False)
    out = tmp / f"emb_w{workers}.parquet"
    t0 = time.perf_counter()
    summary = embed_path(model, manifest, out, cfg, restart=True)
    elapsed = time.perf_counter() - t0
    out.unlink()
    assert summary.n_skipped == 0, f"{summary.n_skipped} images skipped"
    return elapsed


@torch.no_grad()
def time_model(model: nn.Module, batches: list[PackedBatch]) -> float:
    """Wall-clock seconds of ``model(batch)`` over every recorded batch."""
    model.eval()
    t0 = time.perf_counter()
    for batch in batches:
        model(batch)
    return time.perf_counter() - t0


def bench_case(model: nn.Module, manifest: Path, n_images: int, batch_size: int,
               repeats: int, tmp: Path) -> dict[str, Any]:
    """Embed with workers 0 and 2 and the model alone, interleaved, ``repeats`` times."""
    rec = Recorder()
    handle = model.register_forward_pre_hook(rec)
    times: dict[str, list[float]] = {"embed_w0": [], "embed_w2": [], "model_alone": []}
    try:
        for rep in range(repeats):
            rec.active = rep == 0
            times["embed_w0"].append(time_embed(model, manifest, 0, batch_size, tmp))
            rec.active = False
            times["embed_w2"].append(time_embed(model, manifest, 2, batch_size, tmp))
            times["model_alone"].append(time_model(model, rec.batches))
    finally:
        handle.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: n_images / v for k, v in med.items()}
    res: dict[str, Any] = {
        "n_images": n_images,
        "n_batches": len(rec.batches),
        "n_tiles": sum(b.num_images for b in rec.batches),
        "n_planes": sum(int(b.planes.shape[0]) for b in rec.batches),
        "tile_shape": list(rec.batches[0].image_size),
        "seconds": times,
        "images_per_s": ips,
    }
    for w in ("w0", "w2"):
        res[f"ratio_embed_{w}_to_model"] = ips[f"embed_{w}"] / ips["model_alone"]
        res[f"meets_80pct_{w}"] = res[f"ratio_embed_{w}_to_model"] >= 0.8
    return res


def profile_crops(model: nn.Module, manifest: Path, batch_size: int, tmp: Path,
                  top: int = 30) -> dict[str, Any]:
    """cProfile of one ``embed_path`` run (workers 0): top functions by own and total time."""
    prof = cProfile.Profile()
    prof.runcall(time_embed, model, manifest, 0, batch_size, tmp)
    stats: Any = pstats.Stats(prof)  # .stats: {(file, line, name): (cc, nc, tt, ct, callers)}
    total = stats.total_tt

    def rows(column: int) -> list[dict[str, Any]]:
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][column], reverse=True)[:top]
        return [{"function": f"{Path(f).name}:{line}({name})", "calls": nc,
                 "tottime_s": tt, "cumtime_s": ct, "share_cum": ct / total}
                for (f, line, name), (_cc, nc, tt, ct, _callers) in entries]

    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return {"total_s": total, "by_tottime": rows(2), "by_cumtime": rows(3),
            "text_cumulative": text.getvalue()}


def _print_case(name: str, r: dict[str, Any]) -> None:
    ips = r["images_per_s"]
    print(f"{name}: {r['n_images']} images, {r['n_tiles']} tiles of {r['tile_shape']}, "
          f"{r['n_batches']} batches")
    print(f"  model alone {ips['model_alone']:8.1f} img/s")
    for w in ("w0", "w2"):
        print(f"  embed {w}    {ips[f'embed_{w}']:8.1f} img/s  "
              f"({100 * r[f'ratio_embed_{w}_to_model']:.0f} % of model alone)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--crops", type=int, default=3000)
    p.add_argument("--fields", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also cProfile embed_path on N crops (workers 0)")
    p.add_argument("--only", choices=("crops", "fields"), help="run one case")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = biofm.load_model("biofm-vit-tiny").eval()
    res: dict[str, Any] = {
        "benchmark": "embed",
        "device": f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": "biofm-vit-tiny", "batch_size": args.batch_size, "repeats": args.repeats,
        "target": "embed images/s >= 0.8 x model-alone images/s",
    }
    cases: dict[str, Callable[[Path, int, Path], Path]] = {
        "crops": crops_manifest, "fields": fields_manifest}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, build in cases.items():
            if args.only and name != args.only:
                continue
            n = args.crops if name == "crops" else args.fields
            manifest = build(args.data, n, tmp / f"{name}.csv")
            res[name] = bench_case(model, manifest, n, args.batch_size, args.repeats, tmp)
            _print_case(name, res[name])
        if args.profile:
            manifest = crops_manifest(args.data, args.profile, tmp / "profile.csv")
            res["profile_crops"] = {"n_images": args.profile,
                                    **profile_crops(model, manifest, args.batch_size, tmp)}
            print(res["profile_crops"]["text_cumulative"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
