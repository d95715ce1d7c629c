"""``biofm quickstart``: the whole path on an embedded synthetic screen, no data needed.

Generates a small synthetic high-content screen (procedural cells, three experiments with 2, 3
and 5 channels, four treatments), pretrains a tiny BioViT with DINO on CPU, embeds every image
with the pretrained encoder and with the same architecture untrained, and scores k-NN
classification of the treatment for both. Writes results.json and report.md.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from biofm.core.config import apply_overrides, from_dict
from biofm.data.synthetic import SyntheticScreenConfig, write_screen
from biofm.eval.embed import EmbedConfig, embed_manifest
from biofm.eval.knn import evaluate_knn
from biofm.models.io import load_encoder
from biofm.models.registry import create_model
from biofm.train.config import PretrainConfig
from biofm.train.pretrain import pretrain
from biofm.train.report import write_quickstart_report

log = logging.getLogger(__name__)

QUICKSTART_CONFIG: dict[str, Any] = {
    "model": {"name": "biovit_tiny", "kwargs": {"patch_size": 8, "depth": 6, "pool": "mean"}},
    "data": {
        # 32 px crops centred on nuclei (about one cell each), 4 per field: the phenotypes are
        # per cell, and cell-sized views make DINO compare cells rather than cell layouts
        "crop_size": 32, "batch_size": 64, "crops_per_field": "4", "cache_fields": 1024,
        # views keep the pixel scale (crops, not zooms): object size is biology here; no
        # photometric jitter or channel dropout, which erase the intensity and single-channel
        # phenotypes of this screen
        "views": {"global_size": 24, "local_size": 16, "n_local": 4, "ratio": [1.0, 1.0],
                  "global_scale": [0.5, 0.6], "local_scale": [0.2, 0.3],
                  "p_intensity": 0.0, "p_gamma": 0.0, "p_channel_drop": 0.0},
    },
    "dino": {"out_dim": 1024, "hidden_dim": 512, "bottleneck_dim": 128,
             "teacher_temp": 0.04, "momentum_start": 0.99},
    "optim": {"epochs": 6, "lr": 2e-4, "warmup_steps": 20, "clip_grad": 3.0},
    "run": {"log_every": 5, "checkpoint_every": 50, "seed": 0},
}


def quickstart_config(out_dir: Path, manifest: Path, overrides: list[str] | None = None
                      ) -> PretrainConfig:
    data = json.loads(json.dumps(QUICKSTART_CONFIG))
    data["data"]["manifest"] = str(manifest)
    data["run"]["out_dir"] = str(out_dir / "run")
    return from_dict(PretrainConfig, apply_overrides(data, overrides or []))


def _embed_eval(model: torch.nn.Module, df: pd.DataFrame, root: Path, cfg: PretrainConfig,
                ecfg: EmbedConfig) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    emb, meta = embed_manifest(model, df, ecfg, normalize=cfg.data.normalize, root=root)
    scores = evaluate_knn(emb, meta["treatment"].astype(str).to_numpy(), k=10, n_splits=5)
    return emb, meta, scores


def run_quickstart(out_dir: str | Path, overrides: list[str] | None = None,
                   screen: SyntheticScreenConfig | None = None) -> dict[str, Any]:
    """Run the quickstart into ``out_dir``; returns the results (also in results.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    manifest = write_screen(out / "data", screen)
    df = pd.read_csv(manifest)
    log.info("synthetic screen: %d images -> %s", len(df), manifest)
    cfg = quickstart_config(out, manifest, overrides)
    run_dir = pretrain(cfg)
    t_train = time.perf_counter() - t0
    trained = load_encoder(run_dir / "encoder")
    torch.manual_seed(cfg.run.seed)
    random_init = create_model(cfg.model.name, **cfg.model.kwargs).eval()
    # both encoders see the images as the trained one did in training (tiles from its card)
    ecfg = EmbedConfig.for_model(trained, batch_size=64, progress=False)
    emb_p, meta, s_p = _embed_eval(trained, df, manifest.parent, cfg, ecfg)
    emb_r, _, s_r = _embed_eval(random_init, df, manifest.parent, cfg, ecfg)
    results = {
        "data": "synthetic (procedurally generated cells; not real microscopy)",
        "n_images": len(meta), "n_treatments": int(meta["treatment"].nunique()),
        "experiments": {e: int(n) for e, n in meta["experiment"].value_counts().items()},
        "knn_accuracy_pretrained": s_p["knn_top1"]["mean"],
        "knn_accuracy_random_init": s_r["knn_top1"]["mean"],
        "one_nn_macro_f1_pretrained": s_p["one_nn_macro_f1"]["mean"],
        "one_nn_macro_f1_random_init": s_r["one_nn_macro_f1"]["mean"],
        "chance": 1.0 / meta["treatment"].nunique(),
        "scores_pretrained": s_p, "scores_random_init": s_r,
        "model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
        "train_steps": int(json.loads((run_dir / "encoder" / "encoder.json").read_text())
                           ["trained_steps"]),
        "seconds_pretraining": round(t_train, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_quickstart_report(out, results, {"pretrained": emb_p, "random init": emb_r}, meta)
    return results
