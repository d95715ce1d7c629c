"""Smoke test of benchmarks/tasks.py on two real tasks with a tiny saved encoder."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

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
    enc = save_encoder(model, tmp_path / "enc", {"input_size": 32})
    out, md = tmp_path / "tasks.json", tmp_path / "tasks.md"
    bench.main(["--model", f"tiny={enc}", "--tasks", "ph3_mitosis", "defocus",
                "--shared", str(shared_data), "--json", str(out), "--md", str(md)])
    res = json.loads(out.read_text())
    methods = {r["method"] for r in res["results"]}
    assert methods == {"tiny", "untrained", "handcrafted", "pixel_pca"}
    metrics = {(r["task"], r["metric"]) for r in res["results"]}
    assert metrics == {("ph3_mitosis", "1nn_macro_f1"), ("ph3_mitosis", "linear_accuracy"),
                       ("defocus", "ridge_r2")}
    assert all(math.isfinite(r["value"]) for r in res["results"])
    assert all(0 <= r["value"] <= 1 for r in res["results"] if r["metric"] != "ridge_r2")
    text = md.read_text()
    assert "tiny - best baseline" in text and "| ph3_mitosis | 1nn_macro_f1 |" in text
