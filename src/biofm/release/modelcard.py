"""The human-readable model card (``README.md``) of a release, with Hugging Face metadata.

The YAML header follows the Hub's model-card spec (library, licence, pipeline tag, tags,
datasets, metrics, ``model-index`` results); the body says how to feed the model, what it
was trained on (with licences), how it scores beside the built-in baselines, and its limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from biofm.core.errors import BadInputError

REPO_URL = "https://github.com/biofm/biofm"
TAGS = ["biology", "microscopy", "fluorescence-microscopy", "cell-painting", "bioimage",
        "channel-agnostic", "self-supervised-learning", "image-feature-extraction"]
TASK_NAMES = {
    "dsb_modality": "DSB2018 imaging modality (3 classes)",
    "dsb_nuclei": "DSB2018 nucleus count (log)",
    "ph3_mitosis": "ExampleHuman mitotic cells (PH3 withheld)",
    "defocus": "BBBC006 defocus level",
    "cp_same_field": "Cell Painting same-field retrieval",
    "digits": "scikit-learn digits (natural-image control)",
}
METRIC_TYPES = {"1nn_macro_f1": "f1", "linear_accuracy": "accuracy", "ridge_r2": "r_squared",
                "same_field_map": "map"}
BASELINES = ("untrained", "handcrafted", "pixel_pca")


def evaluation_from_tasks(results: Mapping[str, Any] | str | Path, method: str) -> dict[str, Any]:
    """The card's ``evaluation`` from a ``benchmarks/tasks.py`` JSON: ``method``'s score on
    every task and metric, with each baseline's score beside it."""
    if not isinstance(results, Mapping):
        import json

        results = dict(json.loads(Path(results).read_text()))
    res: Mapping[str, Any] = results
    rows = list(res.get("results", []))
    if not any(r["method"] == method for r in rows):
        methods = sorted({r["method"] for r in rows})
        raise BadInputError(f"no results for method {method!r}", f"use one of {methods}")
    out = []
    for r in rows:
        if r["method"] != method:
            continue
        key = (r["task"], r["metric"])
        base = {b["method"]: round(float(b["value"]), 4) for b in rows
                if b["method"] in BASELINES and (b["task"], b["metric"]) == key}
        out.append({"task": r["task"], "metric": r["metric"], "value": round(float(r["value"]), 4),
                    "n": int(r.get("n", 0)), "baselines": base})
    return {"benchmark": "benchmarks/tasks.py", "machine": dict(res.get("machine", {})),
            "results": out}


def _metadata(card: Mapping[str, Any]) -> dict[str, Any]:
    training = card.get("training") or {}
    evaluation = card.get("evaluation") or {}
    results = []
    for r in evaluation.get("results", []):
        title = TASK_NAMES.get(r["task"], r["task"])
        results.append({
            "task": {"type": "image-feature-extraction", "name": title},
            "dataset": {"name": title, "type": r["task"]},
            "metrics": [{"type": METRIC_TYPES.get(r["metric"], r["metric"]), "name": r["metric"],
                         "value": r["value"]}],
        })
    meta: dict[str, Any] = {
        "library_name": "biofm",
        "license": card.get("license", "apache-2.0"),
        "pipeline_tag": "image-feature-extraction",
        "tags": TAGS,
        "datasets": [s["source"] for s in training.get("sources", [])],
        "metrics": sorted({METRIC_TYPES.get(r["metric"], r["metric"])
                           for r in evaluation.get("results", [])}),
    }
    if results:
        meta["model-index"] = [{"name": card.get("name", card["model_name"]), "results": results}]
    return {k: v for k, v in meta.items() if v not in ([], None)}


def _eval_table(evaluation: Mapping[str, Any]) -> list[str]:
    rows = evaluation.get("results", [])
    if not rows:
        return ["No evaluation results were recorded for these weights."]
    lines = ["| task | metric | this model | " + " | ".join(BASELINES) + " |",
             "|---|---|---|" + "---|" * len(BASELINES)]
    for r in rows:
        base = " | ".join(f"{r['baselines'][b]:.3f}" if b in r["baselines"] else "-"
                          for b in BASELINES)
        lines.append(f"| {TASK_NAMES.get(r['task'], r['task'])} | {r['metric']} | "
                     f"{r['value']:.3f} | {base} |")
    machine = evaluation.get("machine", {})
    lines += ["", f"From `{evaluation.get('benchmark', 'benchmarks/tasks.py')}` "
              f"(torch {machine.get('torch', '?')}, {machine.get('threads', '?')} CPU threads). "
              "Baselines: the same architecture untrained; channel-pooled handcrafted features; "
              "pixel PCA."]
    return lines


def _data_table(training: Mapping[str, Any]) -> list[str]:
    sources = training.get("sources", [])
    if not sources:
        return ["The training data were not recorded."]
    lines = ["| source | dataset | images | licence |", "|---|---|---|---|"]
    for s in sources:
        name = f"[{s['dataset']}]({s['url']})" if s.get("url") else s["dataset"]
        lines.append(f"| {s['source']} | {name} | {s['images']} | {s['licence']} |")
    lines.append(f"\nManifest `{training.get('manifest', '?')}` "
                 f"(sha256 `{str(training.get('manifest_sha256', '?'))[:16]}…`).")
    return lines


#: corpus sources whose images the tasks of ``benchmarks/tasks.py`` draw on
TASK_SOURCES = {"dsb2018", "ExampleHuman", "bbbc006", "jump_BR00117006",
                "pediatric_BR00143976", "nf1_plate2", "bbbc022"}


def _overlap(card: Mapping[str, Any]) -> list[str]:
    seen = {s["source"] for s in (card.get("training") or {}).get("sources", [])}
    shared = sorted(seen & TASK_SOURCES)
    if not shared or not (card.get("evaluation") or {}).get("results"):
        return []
    return [f"- The task images of {', '.join(shared)} were among the unlabelled pretraining "
            "images (no task label was used in training); digits is held out entirely."]


def _norm_line(norm: Mapping[str, Any]) -> str:
    """How the model expects intensities to be scaled (its training scope)."""
    pct = (f"percentiles {norm.get('low', 1.0)}–{norm.get('high', 99.8)} mapped to 0–1, "
           f"clipped to {norm.get('clip', [-0.5, 3.0])}")  # fmt: skip
    if norm.get("scope", "image") == "image":
        return (f"trained with each image scaled by its own {pct}. `biofm embed` scales with "
                "statistics fitted on your input per plate or source (`--norm source`, the "
                "default), which keeps intensity phenotypes; `--norm image` reproduces training.")
    return (f"trained with per-channel {pct}, the percentiles fitted per "
            f"{norm.get('group_by', 'source')} over many images (scope `{norm.get('scope')}`), "
            "so absolute intensity is kept. `biofm embed` fits the same statistics on your "
            "input, per plate or source column (`--norm source`, the default), or uses saved "
            "ones (`--norm-stats`); fit them on controls with `--norm-fit-on compound=DMSO`.")


def model_card_markdown(card: Mapping[str, Any]) -> str:
    """``README.md`` text for a release card."""
    name = card.get("name", card["model_name"])
    training = card.get("training") or {}
    norm = card.get("normalize") or {}
    header = yaml.safe_dump(_metadata(card), sort_keys=False, allow_unicode=True).strip()
    body = [
        f"# {name}", "",
        f"A channel-agnostic encoder for microscopy images from biofm {card['biofm_version']}: "
        f"`{card['model_name']}` ({card.get('num_params', 0) / 1e6:.1f} M parameters), "
        f"{card['embed_dim']}-dimensional embeddings for images with any number, order and type "
        "of channels.", "",
        "## Use", "", "```bash", f"biofm embed images/ --model {name} --out emb.parquet", "```",
        "", "```python", "import biofm", f'model = biofm.load_model("{name}")',
        "```", "",
        "## Input", "",
        f"- Channels: any number; names are mapped to the channel vocabulary "
        f"({', '.join((card.get('channel_vocab') or ['(not used)'])[:8])}, ...); unknown names "
        "are allowed.",
        f"- Intensities: {_norm_line(norm)}",
        f"- Size: tiles of {card.get('input_size')}×{card.get('input_size')} pixels "
        f"(trained on {card.get('crop_size', card.get('input_size'))}-pixel crops); pixel size "
        f"{card.get('pixel_size_um') or 'mixed (not fixed by the training data)'}.", "",
        "## Training", "",
        f"Objective `{training.get('objective', card.get('objective', '?'))}`, "
        f"{training.get('steps', card.get('trained_steps', '?'))} steps"
        f"{' on ' + str(training.get('device')) if training.get('device') else ''}"
        f"{', code ' + str(training.get('git_sha'))[:12] if training.get('git_sha') else ''}.", "",
        *_data_table(training), "",
        "## Evaluation", "", *_eval_table(card.get("evaluation") or {}), "",
        "## Limitations", "",
        "- Trained on a small corpus on CPU: a demonstration-scale model, not a replacement for "
        "large pretrained encoders. Compare with the baselines above before relying on it.",
        "- Images are read at their native pixel size; objects much larger or smaller than in "
        "the training data may embed poorly.", *_overlap(card), "",
        "## Citation", "",
        "The architecture follows ChAda-ViT (Bourriez et al., CVPR 2024, arXiv:2311.15264); "
        "the objective SimCLR (Chen et al., ICML 2020, arXiv:2002.05709) or DINO "
        "(Caron et al., ICCV 2021, arXiv:2104.14294) as recorded above.", "",
        f"Card format `{card['format']}`, biofm {card['biofm_version']}, licence "
        f"{card.get('license', 'apache-2.0')}. Code: {REPO_URL}",
    ]
    return f"---\n{header}\n---\n\n" + "\n".join(body) + "\n"
