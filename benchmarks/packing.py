"""Packed vs padded BioViT: forward+backward throughput on mixed channel counts.

Batches whose channel counts are uniform over 1..10 (as in IDRCell100k) run through the same
weights twice, side by side: pad-free packing (biofm) and padding every image to 10 channels
with a key-padding mask (the ChAda-ViT scheme). Prints and saves the measured speed ratio, the
FLOP-ideal ratio (padded FLOPs / packed FLOPs for the same batch) and the fraction of the ideal
achieved.

    python benchmarks/packing.py --json benchmarks/results/packing_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import biofm
from biofm.core import PackedBatch
from biofm.models.padded import padded_forward


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


def time_step(fn: Any, batch: PackedBatch) -> float:
    t0 = time.perf_counter()
    out = fn(batch)
    out.float().pow(2).mean().backward()
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = biofm.create_model(args.model, **({"depth": args.depth} if args.depth else {}))
    model.train()
    cfg = model.cfg
    batches = [make_batch(args.batch, args.size, args.max_channels, s) for s in range(args.reps)]
    packed_fn = model
    padded_fn = lambda b: padded_forward(model, b, args.max_channels)  # noqa: E731
    for fn in (packed_fn, padded_fn):  # warm-up
        time_step(fn, batches[0])
        model.zero_grad(set_to_none=True)
    t_packed, t_padded = [], []
    for b in batches:  # interleaved so drift hits both alike
        t_packed.append(time_step(packed_fn, b))
        model.zero_grad(set_to_none=True)
        t_padded.append(time_step(padded_fn, b))
        model.zero_grad(set_to_none=True)
    n_per_plane = tokens_per_plane(args.size, cfg.patch_size)
    f_packed = f_padded = 0.0
    for b in batches:
        counts = b.counts.tolist()
        f_packed += vit_flops([1 + c * n_per_plane for c in counts], cfg.embed_dim, cfg.depth,
                              cfg.mlp_ratio, sum(counts), cfg.patch_size, n_per_plane)
        f_padded += vit_flops([1 + args.max_channels * n_per_plane] * len(counts),
                              cfg.embed_dim, cfg.depth, cfg.mlp_ratio,
                              args.max_channels * len(counts), cfg.patch_size, n_per_plane)
    images = args.batch * args.reps
    measured = sum(t_padded) / sum(t_packed)
    ideal = f_padded / f_packed
    return {
        "benchmark": "packing", "model": args.model, "depth": cfg.depth,
        "image_size": args.size, "patch": cfg.patch_size, "batch": args.batch,
        "reps": args.reps, "channel_counts": f"uniform 1..{args.max_channels}",
        "device": f"cpu: {platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "packed_images_per_s": images / sum(t_packed),
        "padded_images_per_s": images / sum(t_padded),
        "packed_step_s_median": statistics.median(t_packed),
        "padded_step_s_median": statistics.median(t_padded),
        "measured_ratio": measured, "flop_ideal_ratio": ideal,
        "fraction_of_ideal": measured / ideal,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="biovit_small")
    p.add_argument("--depth", type=int, default=0, help="override depth (0 = the model's)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--max-channels", type=int, default=10)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    res = run(args)
    print(f"{res['model']} depth {res['depth']} at {res['image_size']} px, batch {res['batch']}"
          f" x {res['reps']}, channels {res['channel_counts']} on {res['device']}")
    print(f"  packed : {res['packed_images_per_s']:.3f} images/s (fwd+bwd)")
    print(f"  padded : {res['padded_images_per_s']:.3f} images/s (fwd+bwd)")
    print(f"  measured ratio {res['measured_ratio']:.2f}x | FLOP-ideal "
          f"{res['flop_ideal_ratio']:.2f}x | {100 * res['fraction_of_ideal']:.0f}% of ideal")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
