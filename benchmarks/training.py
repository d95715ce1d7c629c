"""Training throughput: the data loader alone, the model step alone on cached batches, the full
step (loader + model), and 1 -> 2 process scaling with torchrun (gloo on CPU, NCCL on GPU).

The loader must outrun the model (loader / model ratio > 1) and the full step must run at about
the model-alone speed (full / model ratio near 1). Scaling is the global samples/s of two
processes over one, same global batch. Prints every figure and ratio; saves JSON.

    python benchmarks/training.py --json benchmarks/results/training_cpu.json
    python benchmarks/training.py --manifest corpus.csv --config configs/biovit_tiny_shared.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from biofm.core.config import load_config
from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.train.config import PretrainConfig
from biofm.train.pretrain import Trainer

SMALL = ["model.kwargs={patch_size: 8, depth: 4, pool: mean}", "data.crop_size=64",
         "data.crops_per_field=4", "data.batch_size=32",
         "data.views={global_size: 48, local_size: 24, n_local: 2}",
         "dino={out_dim: 1024, hidden_dim: 512, bottleneck_dim: 128}"]


def _rate(n_samples: int, seconds: float) -> float:
    return n_samples / max(seconds, 1e-9)


def loader_alone(tr: Trainer, steps: int) -> float:
    it = iter(tr._micro_batches())
    next(it)  # worker start-up and first fields out of the timing
    t0 = time.perf_counter()
    n = sum(sum(b.batch_size for b in micro) for micro in islice(it, steps))
    return _rate(n, time.perf_counter() - t0)


def model_alone(tr: Trainer, steps: int) -> float:
    cached = list(islice(tr._micro_batches(), min(steps, 4)))
    tr.step(cached[0])  # warm-up
    t0 = time.perf_counter()
    n = 0
    for k in range(steps):
        micro = cached[k % len(cached)]
        tr.step(micro)
        n += sum(b.batch_size for b in micro)
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    return _rate(n, time.perf_counter() - t0)


def full_step(tr: Trainer, steps: int) -> float:
    it = iter(tr._micro_batches())
    tr.step(next(it))  # warm-up
    t0 = time.perf_counter()
    n = 0
    for micro in islice(it, steps):
        tr.step(micro)
        n += sum(b.batch_size for b in micro)
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    return _rate(n, time.perf_counter() - t0)


def scaling(args: argparse.Namespace, sets: list[str], out: Path) -> dict[str, Any]:
    """Global samples/s of ``biofm train`` on 1 and 2 processes (same global batch)."""
    res: dict[str, Any] = {}
    for nproc in (1, 2):
        run = out / f"scale_{nproc}"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", "--master_port=29517", "-m", "biofm", "train",
               "--data", str(args.manifest), "--out", str(run)]
        if args.config:
            cmd += ["--config", str(args.config)]
        threads = max(1, args.threads // nproc)
        for s in [*sets, f"optim.max_steps={args.scale_steps}", f"run.threads={threads}",
                  "run.log_every=1", "run.progress=false", "run.checkpoint_every=100000"]:
            cmd += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        log = pd.read_csv(run / "log.csv")
        # rate over the second half of the run (start-up and warm-up excluded)
        half = log.iloc[len(log) // 2:]
        res[f"samples_per_s_{nproc}proc"] = float(half["samples_per_s"].median())
    res["scaling_2_over_1"] = res["samples_per_s_2proc"] / res["samples_per_s_1proc"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="training manifest (default: a synthetic "
                    "screen written to a temporary folder)")
    ap.add_argument("--config", type=Path, help="preset (default: a small BioViT recipe)")
    ap.add_argument("--objective", default="dino")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--scale-steps", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="biofm_bench_"))
    if args.manifest is None:
        cfg = SyntheticScreenConfig(n_images_per_treatment=16, n_plates=2, fields_per_well=2,
                                    image_size=128, experiments=DEFAULT_EXPERIMENTS[:2])
        args.manifest = write_screen(tmp / "screen", cfg)
    sets = [*([] if args.config else SMALL), f"objective={args.objective}",
            f"data.num_workers={args.workers}", *args.extra]
    torch.set_num_threads(args.threads)
    cfg = load_config(PretrainConfig, args.config, [
        *sets, f"data.manifest={args.manifest}", f"run.out_dir={tmp / 'run'}",
        "run.progress=false"])
    tr = Trainer(cfg)
    res: dict[str, Any] = {"loader_samples_per_s": loader_alone(tr, args.steps)}
    res["model_samples_per_s"] = model_alone(tr, args.steps)
    res["full_samples_per_s"] = full_step(tr, args.steps)
    res["loader_over_model"] = res["loader_samples_per_s"] / res["model_samples_per_s"]
    res["full_over_model"] = res["full_samples_per_s"] / res["model_samples_per_s"]
    for k, v in res.items():
        print(f"{k:>24}: {v:8.2f}")
    if not args.skip_scaling:
        sc = scaling(args, sets, tmp)
        for k, v in sc.items():
            print(f"{k:>24}: {v:8.2f}")
        res.update(sc)
    device = torch.cuda.get_device_name() if tr.device.type == "cuda" else "cpu"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "threads": args.threads, "device": device,
                        "platform": platform.platform(), "torch": torch.__version__},
            "objective": args.objective, "manifest": str(args.manifest),
            "config": str(args.config or "small BioViT recipe"), "sets": sets,
            "global_batch": cfg.data.batch_size, "results": res}, indent=2))


if __name__ == "__main__":
    main()
