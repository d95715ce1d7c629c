"""Weights cards and release folders: strict loading, refusals that name the fix, the release
built from a real (tiny) training run, and the models shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import biofm
from biofm.core.batch import PackedBatch
from biofm.core.config import load_config
from biofm.core.errors import BadInputError
from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.release import PRETRAINED, load_model, save_release
from biofm.release.build import build_release
from biofm.release.card import (
    CARD_FORMAT,
    IncompatibleCardError,
    make_card,
    release_card,
    training_data,
)
from biofm.train.config import PretrainConfig
from biofm.train.pretrain import pretrain

SMALL = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


def _batch() -> PackedBatch:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 32, 32, generator=g), torch.rand(5, 32, 32, generator=g)]
    return PackedBatch.from_images(images, [[1, 2, 3], [1, 2, 3, 4, 5]])


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    model = biofm.create_model("biovit_tiny", **SMALL)
    return save_release(model, tmp_path / "rel", make_card(model, name="tiny-test"))


def _edit(folder: Path, **changes: object) -> None:
    card = json.loads((folder / "config.json").read_text())
    card.update(changes)
    (folder / "config.json").write_text(json.dumps(card))


def test_release_round_trip_is_strict_and_exact(release: Path) -> None:
    assert sorted(p.name for p in release.iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    card = json.loads((release / "config.json").read_text())
    assert card["format"] == CARD_FORMAT and card["biofm_version"] == biofm.__version__
    assert card["model_name"] == "biovit_tiny" and card["model_kwargs"] == SMALL
    a, b = load_model(release), load_model(release / "model.safetensors")
    assert a.weights_card["name"] == "tiny-test"
    with torch.no_grad():
        torch.testing.assert_close(a(_batch()), b(_batch()), rtol=0, atol=0)
    assert not a.training


@pytest.mark.parametrize(("changes", "says"), [
    ({"format": "biofm-card/2"}, "pip install -U biofm"),
    ({"format": "something-else"}, "not one this biofm"),
    ({"biofm_version": "9.0.0"}, "newer than this biofm"),
    ({"model_name": "biovit_gigantic"}, "not in biofm"),
    ({"embed_dim": 64}, "embed_dim 64"),
    ({"model_kwargs": {**SMALL, "depth": 2}}, "missing blocks.1"),
    ({"model_kwargs": {**SMALL, "wings": 2}}, "model_kwargs do not fit"),
    ({"channel_vocab": ["unknown", "ER", "DNA"]}, "another channel vocabulary"),
])
def test_incompatible_cards_are_refused_with_the_fix(release: Path, changes: dict[str, object],
                                                     says: str) -> None:
    _edit(release, **changes)
    with pytest.raises(IncompatibleCardError, match="Fix:") as err:
        load_model(release)
    assert says in str(err.value)


def test_replaced_or_missing_weights_are_refused(release: Path, tmp_path: Path) -> None:
    other = biofm.create_model("biovit_tiny", **SMALL)
    save_release(other, tmp_path / "other", make_card(other, name="x"))
    (release / "model.safetensors").write_bytes((tmp_path / "other/model.safetensors").read_bytes())
    with pytest.raises(BadInputError, match="sha256"):
        load_model(release)
    (release / "model.safetensors").unlink()
    with pytest.raises(BadInputError, match="safetensors weights only"):
        load_model(release)
    (release / "config.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_model(release)


def test_unknown_sources_name_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="biofm-vit-tiny"):
        load_model(str(tmp_path / "no" / "such" / "dir"))


def test_training_data_lists_sources_with_licences(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,source\na,dsb2018\nb,dsb2018\nc,bbbc006\nd,ExampleFly\ne,mine\n")
    data = training_data(manifest)
    by = {s["source"]: s for s in data["sources"]}
    assert data["images"] == 5 and len(data["manifest_sha256"]) == 64
    assert by["dsb2018"]["images"] == 2 and by["dsb2018"]["licence"] == "CC0-1.0"
    assert by["ExampleFly"]["licence"] == "BSD-3-Clause"
    assert by["mine"]["licence"] == "unknown"


def test_release_from_a_training_run_records_how_it_was_made(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    cfg = SyntheticScreenConfig(n_images_per_treatment=4, n_plates=1, fields_per_well=1,
                                image_size=32, experiments=DEFAULT_EXPERIMENTS[:1])
    manifest = write_screen(tmp_path / "screen", cfg)
    run = pretrain(load_config(PretrainConfig, None, [
        "model.kwargs={patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}",
        "data.crop_size=32", "data.batch_size=8",
        "data.views={global_size: 24, local_size: 16, n_local: 2}",
        "dino={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}", "optim.max_steps=2",
        "run.progress=false", f"data.manifest={manifest}", f"run.out_dir={tmp_path / 'run'}"]))
    tasks = {"machine": {"torch": "2.x", "threads": 2}, "results": [
        {"task": "digits", "metric": "1nn_macro_f1", "method": m, "value": v, "n": 60}
        for m, v in (("mine", 0.5), ("untrained", 0.4), ("handcrafted", 0.2), ("pixel_pca", 0.9))]}
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    out = build_release(run, tmp_path / "rel", name="tiny-run", tasks_json=tmp_path / "tasks.json",
                        method="mine")
    card = json.loads((out / "config.json").read_text())
    run_yaml = yaml.safe_load((run / "run.yaml").read_text())
    assert card["training"]["objective"] == "dino" and card["training"]["steps"] == 2
    assert card["training"]["git_sha"] == run_yaml["git_sha"]
    assert card["training"]["images"] == len(manifest.read_text().splitlines()) - 1
    assert card["input_size"] == 24 and card["crop_size"] == 32
    assert card["evaluation"]["results"] == [{"task": "digits", "metric": "1nn_macro_f1",
                                              "value": 0.5, "n": 60, "baselines": {
        "untrained": 0.4, "handcrafted": 0.2, "pixel_pca": 0.9}}]
    readme = (out / "README.md").read_text()
    assert "| scikit-learn digits (natural-image control) | 1nn_macro_f1 | 0.500 | 0.400" in readme
    with pytest.raises(BadInputError, match="method"):
        build_release(run, tmp_path / "rel2", name="x", tasks_json=tmp_path / "tasks.json")
    # an encoder card from training is upgraded to a release card on export
    assert release_card(load_model(run))["format"] == CARD_FORMAT


def test_shipped_models_load_with_no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, (arch, _) in PRETRAINED.items():
        model = biofm.load_model(name)
        card = model.weights_card
        assert card["name"] == name and card["model_name"] == arch
        assert (Path(biofm.__file__).parent / "pretrained" / name / "model.safetensors"
                ).stat().st_size <= 25 * 2**20
        assert {s["licence"] for s in card["training"]["sources"]} <= {
            "CC0-1.0", "BSD-3-Clause"}
        assert card["evaluation"]["results"], "the shipped card carries its task results"
        with torch.no_grad():
            emb = model(_batch())
        assert emb.shape == (2, card["embed_dim"]) and torch.isfinite(emb).all()
