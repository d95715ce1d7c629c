"""Encoder throughput, side by side in one run: every variant at C in {1, 3, 5, 10}.

CPU (always): images/s forward (eval, no grad) and forward+backward (train) per variant and
channel count, each also as a ratio to the baseline variant (``--baseline``, BioViT-small) at
the same C; then packed vs padded BioViT-small on the 1..10 mix with its FLOP-ideal ratio.

GPU (when CUDA is present): tokens/s and model FLOP utilisation (MFU) of a BioViT-small/16 bf16
training step at 224 px on a 5-channel batch, eager and ``torch.compile``; and packed vs padded
there. MFU = (3 x forward FLOPs per step) / step time / the device's dense bf16 peak.

    python benchmarks/encoders.py --json benchmarks/results/encoders_cpu.json
    python benchmarks/encoders.py --json benchmarks/results/encoders_gpu.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import biofm
import packing
from biofm.core import DEFAULT_VOCAB, PackedBatch

DEFAULT_MODELS = ("biovit_tiny", "biovit_small", "boc_vit_small", "bioresnet18", "bioresnet50")
#: dense bf16 peak (TFLOP/s) by device-name fragment, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def batch_of(n: int, channels: int, size: int, seed: int = 0) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    ims = [torch.randn(channels, size, size, generator=g) for _ in range(n)]
    ids = [torch.randint(1, len(DEFAULT_VOCAB), (channels,), generator=g).tolist()
           for _ in range(n)]
    return PackedBatch.from_images(ims, ids)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], reps: int, device: torch.device, warmup: int = 1
          ) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def throughput(model: torch.nn.Module, batch: PackedBatch, reps: int, device: torch.device,
               train: bool, autocast: torch.dtype | None = None) -> float:
    """Images/s, median over ``reps`` timed steps."""

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast or torch.float32,
                            enabled=autocast is not None):
            if train:
                out = model(batch)
                out.float().pow(2).mean().backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(batch)

    model.train(train)
    return batch.num_images / statistics.median(timed(step, reps, device))


def cpu_section(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    models = list(dict.fromkeys([args.baseline, *args.models]))
    for name in models:
        torch.manual_seed(0)
        model = biofm.create_model(name)
        params = sum(p.numel() for p in model.parameters())
        for c in args.channels:
            batch = batch_of(args.batch, c, args.size, seed=c)
            fwd = throughput(model, batch, args.reps, device, train=False)
            fwd_bwd = throughput(model, batch, args.reps, device, train=True)
            rows.append({"model": name, "params": params, "channels": c,
                         "forward_images_per_s": fwd, "train_images_per_s": fwd_bwd})
            print(f"  {name:16s} C={c:2d}  fwd {fwd:8.2f} img/s  fwd+bwd {fwd_bwd:8.2f} img/s",
                  flush=True)
        del model
    base = {r["channels"]: r for r in rows if r["model"] == args.baseline}
    for r in rows:
        b = base[r["channels"]]
        r["forward_vs_baseline"] = r["forward_images_per_s"] / b["forward_images_per_s"]
        r["train_vs_baseline"] = r["train_images_per_s"] / b["train_images_per_s"]
    pack_args = argparse.Namespace(model="biovit_small", depth=0, size=args.size,
                                   batch=args.pack_batch, reps=args.pack_reps, max_channels=10)
    pack = packing.run(pack_args)
    print(f"  packed vs padded biovit_small, 1..10 mix: measured {pack['measured_ratio']:.2f}x, "
          f"FLOP-ideal {pack['flop_ideal_ratio']:.2f}x, "
          f"{100 * pack['fraction_of_ideal']:.0f}% of ideal", flush=True)
    return {"device": f"cpu: {platform.processor() or platform.machine()}, "
                      f"{torch.get_num_threads()} threads",
            "image_size": args.size, "batch": args.batch, "reps": args.reps,
            "baseline": args.baseline, "rows": rows, "packed_vs_padded": pack}


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, val in PEAK_BF16_TFLOPS.items():
        if key in name:
            return val
    return None


def gpu_section(args: argparse.Namespace) -> dict[str, Any]:
    from biofm.models.padded import padded_forward

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = peak_tflops(name, args.peak_tflops)
    torch.backends.cuda.matmul.allow_tf32 = True
    out: dict[str, Any] = {"device": name, "peak_bf16_tflops": peak, "runs": []}
    size, patch, c = 224, 16, 5
    n_plane = (size // patch) ** 2
    for compiled in (False, True):
        torch.manual_seed(0)
        model = biofm.create_model("biovit_small").to(device)
        cfg = model.cfg
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        fwd: Callable[[PackedBatch], torch.Tensor] = (
            torch.compile(model, dynamic=False) if compiled else model)
        batch = batch_of(args.gpu_batch, c, size).to(device)

        def step(fwd: Callable[[PackedBatch], torch.Tensor] = fwd,
                 batch: PackedBatch = batch, opt: torch.optim.Optimizer = opt) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(batch).float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        times = timed(step, args.gpu_reps, device, warmup=3)
        t = statistics.median(times)
        tokens = args.gpu_batch * (1 + c * n_plane)
        flops = 3 * packing.vit_flops([1 + c * n_plane] * args.gpu_batch, cfg.embed_dim,
                                      cfg.depth, cfg.mlp_ratio, c * args.gpu_batch, patch,
                                      n_plane)
        run = {"compiled": compiled, "batch": args.gpu_batch, "channels": c, "step_s": t,
               "tokens_per_s": tokens / t, "images_per_s": args.gpu_batch / t,
               "tflops": flops / t / 1e12,
               "mfu": (flops / t / 1e12) / peak if peak else None}
        out["runs"].append(run)
        mfu = f"{100 * run['mfu']:.1f}%" if run["mfu"] is not None else "n/a"
        print(f"  biovit_small/16 bf16 train step, {c} ch, batch {args.gpu_batch}, "
              f"compile={compiled}: {run['tokens_per_s']:.0f} tokens/s, "
              f"{run['tflops']:.1f} TFLOP/s, MFU {mfu}", flush=True)
    # packed vs padded on the 1..10 mix, bf16 fwd+bwd
    torch.manual_seed(0)
    model = biofm.create_model("biovit_small").to(device).train()
    mixes = [packing.make_batch(args.gpu_batch, size, 10, s).to(device) for s in range(4)]

    def fb(fn: Callable[[PackedBatch], torch.Tensor], b: PackedBatch) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fn(b).float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    def padded(b: PackedBatch) -> torch.Tensor:
        return padded_forward(model, b, 10)

    t_pk = sum(statistics.median(timed(lambda b=b: fb(model, b), 5, device, 2)) for b in mixes)
    t_pd = sum(statistics.median(timed(lambda b=b: fb(padded, b), 5, device, 2)) for b in mixes)
    f_pk = f_pd = 0.0
    for b in mixes:
        counts = b.counts.tolist()
        f_pk += packing.vit_flops([1 + k * n_plane for k in counts], 384, 12, 4.0, sum(counts),
                                  patch, n_plane)
        f_pd += packing.vit_flops([1 + 10 * n_plane] * len(counts), 384, 12, 4.0,
                                  10 * len(counts), patch, n_plane)
    out["packed_vs_padded"] = {"measured_ratio": t_pd / t_pk, "flop_ideal_ratio": f_pd / f_pk,
                               "fraction_of_ideal": (t_pd / t_pk) / (f_pd / f_pk)}
    pv = out["packed_vs_padded"]
    print(f"  packed vs padded (bf16, 1..10 mix): {pv['measured_ratio']:.2f}x, ideal "
          f"{pv['flop_ideal_ratio']:.2f}x, {100 * pv['fraction_of_ideal']:.0f}% of ideal")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--baseline", default="biovit_small")
    p.add_argument("--channels", nargs="+", type=int, default=[1, 3, 5, 10])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--pack-batch", type=int, default=6)
    p.add_argument("--pack-reps", type=int, default=2)
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--gpu-reps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU, if unknown")
    p.add_argument("--skip-cpu", action="store_true", help="GPU section only")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    res: dict[str, Any] = {"benchmark": "encoders", "torch": torch.__version__,
                           "biofm": biofm.__version__}
    if not args.skip_cpu:
        print(f"CPU, {args.size} px, batch {args.batch}, median of {args.reps}:", flush=True)
        res["cpu"] = cpu_section(args)
    if torch.cuda.is_available():
        print("GPU:", flush=True)
        res["gpu"] = gpu_section(args)
    else:
        res["gpu"] = None
        print("GPU: none here; the GPU section runs where CUDA is available")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
