"""Smoke test of benchmarks/tasks.py on two real tasks with a tiny saved encoder."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pandas as pd
import torch

import biofm
from biofm.models.io import save_encoder

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks.py"


def test_tasks_benchmark_scores_models_beside_baselines(shared_data: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("tasks_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    model = biofm.create_model("biovit_tiny", depth=1, embed_dim=32, num_heads=2, patch_size=8)
    saw_human, saw_focus = tmp_path / "human.csv", tmp_path / "focus.csv"
    pd.DataFrame({"source": ["ExampleHuman", "dsb2018"]}).to_csv(saw_human, index=False)
    pd.DataFrame({"source": ["bbbc006"]}).to_csv(saw_focus, index=False)
    enc = save_encoder(model, tmp_path / "enc", {"input_size": 32,
                                                 "training_manifest": str(saw_human)})
    other = save_encoder(model, tmp_path / "other", {"input_size": 32,
                                                     "training_manifest": str(saw_focus)})
    out, md = tmp_path / "tasks.json", tmp_path / "tasks.md"
    bench.main(["--model", f"tiny={enc}", "--lso", f"lso={enc},{other}", "--blocks",
                "--tasks", "ph3_mitosis", "defocus", "--shared", str(shared_data),
                "--json", str(out), "--md", str(md)])
    res = json.loads(out.read_text())
    rows = pd.DataFrame(res["results"])
    assert {"tiny", "lso", "untrained", "handcrafted", "pixel_pca",
            "tiny block 0", "lso block 0", "untrained block 0"} == set(rows["method"])
    # leave-source-out: each task scored by the encoder that never saw its source
    chosen = rows[rows["method"] == "lso"].groupby("task")["model"].first().to_dict()
    assert chosen == {"ph3_mitosis": "lso[1]", "defocus": "lso[0]"}
    assert not rows[rows["method"] == "lso"]["saw_task_source"].any()
    assert rows[(rows["method"] == "tiny") & (rows["task"] == "ph3_mitosis")][
        "saw_task_source"].all()
    metrics = {(r["task"], r["metric"]) for r in res["results"]}
    assert metrics == {("ph3_mitosis", "1nn_macro_f1"), ("ph3_mitosis", "linear_accuracy"),
                       ("defocus", "ridge_r2_pooled"), ("defocus", "spearman")}
    assert all(math.isfinite(r["value"]) for r in res["results"])
    assert all(0 <= r["value"] <= 1 for r in res["results"] if "ridge" not in r["metric"]
               and r["metric"] != "spearman")  # fmt: skip
    text = md.read_text()
    assert "lso - best baseline" in text and "tiny best block" in text
    assert "| ph3_mitosis | 1nn_macro_f1 |" in text and "†" in text
