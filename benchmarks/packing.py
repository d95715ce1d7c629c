"""Packed vs padded BioViT: training and inference speed and operator calls on mixed channels.

Batches whose channel counts are uniform over 1..10 (as in IDRCell100k) run through the same
weights twice, side by side: pad-free packing (biofm) and padding every image to 10 channels
with a key-padding mask (the ChAda-ViT scheme). The default model matches the ChAda-ViT
comparison: dim 192, 12 blocks, 2 heads, MLP hidden 2048, batch 16, fp32, 96 and 224 px, with
``--threads`` CPU threads (default 2). For each size and mode (``train``: forward + backward;
``infer``: forward under ``no_grad``) it reports images/s of both, the measured speed ratio,
the FLOP-ideal ratio (padded FLOPs / packed FLOPs for the same batches), the fraction of the
ideal achieved, and operator calls per step of both and their ratio.

Operator calls are counted on the first (untimed, warm-up) step of each path with a
``TorchDispatchMode`` that counts every aten operator reaching a kernel, forward and backward
(views included; ops called inside another op's kernel are not counted again): one count per
call from Python or the autograd engine into ATen, i.e. per kernel launch on a GPU.
``profiler_events`` gives torch.profiler's event count of the same step for reference (it also
counts ops nested inside other ops and autograd-node wrappers, so it is several times larger).

    python benchmarks/packing.py --json benchmarks/results/packing_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import biofm
from biofm.core import PackedBatch
from biofm.models.padded import padded_forward

Step = Callable[[PackedBatch], torch.Tensor]


def vit_flops(tokens: list[int], dim: int, depth: int, mlp_ratio: float, n_planes: int,
              patch: int, per_plane: int) -> float:
    """Forward FLOPs (multiply-add = 2) of the transformer plus patch embedding.

    ``tokens``: sequence length of each image; ``per_plane``: patch tokens per channel plane.
    """
    per_block = 0.0
    for n in tokens:
        linear = 2 * n * dim * (3 * dim + dim + 2 * mlp_ratio * dim)  # qkv, proj, mlp
        attn = 2 * 2 * n * n * dim  # q k^T and attn @ v
        per_block += linear + attn
    patch_embed = 2 * n_planes * per_plane * patch * patch * dim
    return depth * per_block + patch_embed


def tokens_per_plane(size: int, patch: int) -> int:
    return (size // patch) ** 2


def make_batch(batch: int, size: int, max_c: int, seed: int) -> PackedBatch:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_c + 1, (batch,), generator=g).tolist()
    n_ids = len(biofm.core.DEFAULT_VOCAB)
    ims = [torch.randn(c, size, size, generator=g) for c in counts]
    ids = [torch.randint(0, n_ids, (c,), generator=g).tolist() for c in counts]
    return PackedBatch.from_images(ims, ids)


class OpCounter(TorchDispatchMode):
    """Counts aten operator calls that reach a kernel (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def time_step(fn: Step, batch: PackedBatch, train: bool) -> float:
    t0 = time.perf_counter()
    if train:
        fn(batch).float().pow(2).mean().backward()
    else:
        with torch.no_grad():
            fn(batch)
    return time.perf_counter() - t0


def count_step(fn: Step, batch: PackedBatch, train: bool) -> tuple[int, int]:
    """(operator calls, profiler events) of one step."""
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu) as prof, OpCounter() as counter:
        time_step(fn, batch, train)
    return counter.calls, len(prof.events())


def measure(model: torch.nn.Module, fns: dict[str, Step], batches: list[PackedBatch],
            train: bool) -> dict[str, Any]:
    """Counts on an untimed first step, then timed steps interleaved so drift hits both."""
    model.train(train)
    out: dict[str, Any] = {}
    for name, fn in fns.items():
        out[f"{name}_op_calls"], out[f"{name}_profiler_events"] = count_step(
            fn, batches[0], train)
        model.zero_grad(set_to_none=True)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for b in batches:
        for name, fn in fns.items():
            times[name].append(time_step(fn, b, train))
            model.zero_grad(set_to_none=True)
    images = sum(b.num_images for b in batches)
    for name, t in times.items():
        out[f"{name}_images_per_s"] = images / sum(t)
        out[f"{name}_step_s_median"] = statistics.median(t)
    return out


def flop_ratio(model: Any, batches: list[PackedBatch], size: int, max_c: int) -> float:
    """Padded FLOPs / packed FLOPs over ``batches``."""
    cfg = model.cfg
    n = tokens_per_plane(size, cfg.patch_size)
    f_packed = f_padded = 0.0
    for b in batches:
        counts = b.counts.tolist()
        f_packed += vit_flops([1 + c * n for c in counts], cfg.embed_dim, cfg.depth,
                              cfg.mlp_ratio, sum(counts), cfg.patch_size, n)
        f_padded += vit_flops([1 + max_c * n] * len(counts), cfg.embed_dim, cfg.depth,
                              cfg.mlp_ratio, max_c * len(counts), cfg.patch_size, n)
    return f_padded / f_packed


def run_case(model: Any, size: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    batches = [make_batch(args.batch, size, args.max_channels, s) for s in range(args.reps)]
    fns: dict[str, Step] = {
        "packed": model, "padded": lambda b: padded_forward(model, b, args.max_channels)}
    res = {"image_size": size, "mode": mode, **measure(model, fns, batches, mode == "train")}
    res["measured_ratio"] = res["packed_images_per_s"] / res["padded_images_per_s"]
    res["flop_ideal_ratio"] = flop_ratio(model, batches, size, args.max_channels)
    res["fraction_of_ideal"] = res["measured_ratio"] / res["flop_ideal_ratio"]
    res["op_call_ratio"] = res["packed_op_calls"] / res["padded_op_calls"]
    res["profiler_event_ratio"] = res["packed_profiler_events"] / res["padded_profiler_events"]
    return res


def build_model(args: argparse.Namespace) -> Any:
    torch.manual_seed(0)
    kw: dict[str, Any] = {"embed_dim": args.dim, "num_heads": args.heads,
                          "mlp_ratio": args.mlp_hidden / args.dim}
    if args.depth:
        kw["depth"] = args.depth
    return biofm.create_model(args.model, **kw)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    model = build_model(args)
    cfg = model.cfg
    sizes = [args.size] if args.size else args.sizes
    results = [run_case(model, s, m, args) for s in sizes for m in args.modes]
    return {
        "benchmark": "packing", "model": args.model, "embed_dim": cfg.embed_dim,
        "depth": cfg.depth, "num_heads": cfg.num_heads,
        "mlp_hidden": int(cfg.embed_dim * cfg.mlp_ratio), "patch": cfg.patch_size,
        "attn_impl": cfg.attn_impl, "batch": args.batch, "reps": args.reps,
        "channel_counts": f"uniform 1..{args.max_channels}", "dtype": "float32",
        "op_count_method": "TorchDispatchMode: aten operator calls per step (fwd + bwd)",
        "device": f"cpu: {platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads",
        "torch": torch.__version__, "results": results,
        "min_fraction_of_ideal": min(r["fraction_of_ideal"] for r in results),
        "max_op_call_ratio": max(r["op_call_ratio"] for r in results),
    }


def report(res: dict[str, Any]) -> None:
    print(f"{res['model']} dim {res['embed_dim']} depth {res['depth']} heads "
          f"{res['num_heads']} MLP {res['mlp_hidden']}, batch {res['batch']} x {res['reps']}, "
          f"channels {res['channel_counts']} on {res['device']}")
    for r in res["results"]:
        print(f"  {r['image_size']:>4} px {r['mode']:<5}: packed "
              f"{r['packed_images_per_s']:.3f} img/s, padded {r['padded_images_per_s']:.3f} "
              f"img/s | {r['measured_ratio']:.2f}x of FLOP-ideal {r['flop_ideal_ratio']:.2f}x "
              f"= {100 * r['fraction_of_ideal']:.0f}% | op calls {r['packed_op_calls']} vs "
              f"{r['padded_op_calls']} ({r['op_call_ratio']:.2f}x; profiler events "
              f"{r['profiler_event_ratio']:.2f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="biovit_tiny")
    p.add_argument("--depth", type=int, default=12, help="blocks (0 = the model's)")
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--mlp-hidden", type=int, default=2048)
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    p.add_argument("--size", type=int, default=0, help="one size instead of --sizes")
    p.add_argument("--modes", nargs="+", default=["train", "infer"],
                   choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=3, help="timed steps per path, size and mode")
    p.add_argument("--max-channels", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    res = run(args)
    report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
