"""Turn a training run into a release folder whose card records how it was made and how it
scores: objective and steps, code commit, data sources with licences, task results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from biofm.core.errors import BadInputError
from biofm.release.card import make_card, training_data
from biofm.release.modelcard import evaluation_from_tasks
from biofm.release.weights import load_model, save_release


def _run_facts(run_dir: Path) -> dict[str, Any]:
    """Objective, steps, batch, device and commit from a ``biofm train`` run directory."""
    facts: dict[str, Any] = {}
    cfg_file, run_file = run_dir / "config.yaml", run_dir / "run.yaml"
    if cfg_file.is_file():
        cfg = yaml.safe_load(cfg_file.read_text()) or {}
        data = cfg.get("data", {})
        facts.update(objective=cfg.get("objective"), batch_size=data.get("batch_size"),
                     crop_size=data.get("crop_size"), manifest=data.get("manifest"))
    if run_file.is_file():
        run = yaml.safe_load(run_file.read_text()) or {}
        facts.update(git_sha=run.get("git_sha"), device=run.get("device"))
    return {k: v for k, v in facts.items() if v is not None}


def build_release(model_source: str | Path, out_dir: str | Path, *, name: str,
                  manifest: str | Path | None = None, tasks_json: str | Path | None = None,
                  method: str | None = None, license: str = "apache-2.0") -> Path:
    """Write a release folder for ``model_source`` (a run directory or any ``load_model``
    source). ``manifest``: the training manifest (default: the one in the run's config,
    relative to the current directory); ``tasks_json`` + ``method``: this model's row of a
    ``benchmarks/tasks.py`` result, recorded with the baselines beside it."""
    model = load_model(model_source)
    base = dict(getattr(model, "weights_card", {}) or {})
    run_dir = Path(model_source)
    facts = _run_facts(run_dir) if run_dir.is_dir() else {}
    training: dict[str, Any] = {
        "objective": facts.get("objective", base.get("objective")),
        "steps": base.get("trained_steps"),
        **{k: facts[k] for k in ("batch_size", "device", "git_sha") if k in facts},
    }
    manifest = manifest or facts.get("manifest") or base.get("training_manifest")
    if manifest is not None:
        training.update(training_data(manifest))
    if facts.get("crop_size"):
        base["crop_size"] = facts["crop_size"]
    evaluation = None
    if tasks_json is not None:
        if method is None:
            raise BadInputError("tasks results given without the method to read",
                                "pass the name the model had in benchmarks/tasks.py")
        evaluation = evaluation_from_tasks(tasks_json, method)
    card = make_card(model, name=name, base=base, training=training, evaluation=evaluation,
                     license=license)
    return save_release(model, out_dir, card)
