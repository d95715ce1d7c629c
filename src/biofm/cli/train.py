"""``biofm train``: self-supervised or weakly supervised pretraining of an encoder on a
manifest (one process, or many under ``torchrun``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="pretrain an encoder (DINO, MAE, SimCLR, WS-DINO, SupCon) on a manifest",
        description="Pretrain a channel-agnostic encoder (--set objective=dino|mae|simclr|"
        "wsdino|supcon). Resumes automatically from the newest checkpoint in the run directory. "
        "Writes log.csv, checkpoints/ and, at the end, encoder/ (safetensors + card) for "
        "'biofm embed --model RUN_DIR'. Many processes: torchrun --nproc_per_node N -m biofm "
        "train ... (data.batch_size is the global batch).",
    )
    p.add_argument("--config", help="YAML preset (see configs/); flags below override it")
    p.add_argument("--data", help="training manifest CSV (from 'biofm data index')")
    p.add_argument("--out", help="run directory (default from the config: run.out_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.epochs=5 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biofm.core.config import load_config
    from biofm.train.config import PretrainConfig
    from biofm.train.pretrain import pretrain

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.manifest={args.data}")
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    cfg = load_config(PretrainConfig, args.config, overrides)
    out = pretrain(cfg)
    print(f"run finished: {out}  (encoder in {out / 'encoder'})")
    return 0
