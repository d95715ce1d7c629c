"""Trainer: a real (tiny) DINO run on a synthetic screen; logs, checkpoints, resume, exports,
bad samples, divergence, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from biofm.core.config import load_config
from biofm.core.errors import BiofmError, ConfigError
from biofm.data.synthetic import DEFAULT_EXPERIMENTS, SyntheticScreenConfig, write_screen
from biofm.models.io import load_encoder, load_encoder_any
from biofm.train import checkpoint as ckpt
from biofm.train.config import PretrainConfig
from biofm.train.pretrain import DivergedError, Trainer, pretrain

TINY = [
    "model.kwargs={patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}",
    "data.crop_size=32", "data.batch_size=8",
    "data.views={global_size: 24, local_size: 16, n_local: 2}",
    "dino={out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}",
    "optim.warmup_steps=2", "run.progress=false", "run.log_every=1",
]


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SyntheticScreenConfig(n_images_per_treatment=6, n_plates=1, fields_per_well=2,
                                image_size=32, experiments=DEFAULT_EXPERIMENTS[:2])
    return write_screen(tmp_path_factory.mktemp("screen"), cfg)


def _cfg(manifest: Path, out: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*TINY, f"data.manifest={manifest}",
                                              f"run.out_dir={out}", *extra])


def test_run_writes_logs_checkpoints_and_encoder(screen: Path, tmp_path: Path) -> None:
    out = pretrain(_cfg(screen, tmp_path / "run", "optim.max_steps=3",
                        "run.checkpoint_every=2"))
    log = pd.read_csv(out / "log.csv")
    assert log["step"].tolist() == [1, 2, 3]
    assert log["loss"].notna().all() and (log["lr"] > 0).all()
    assert (out / "config.yaml").is_file() and (out / "run.yaml").is_file()
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [
        "step_00000002", "step_00000003"]
    enc = load_encoder(out / "encoder")
    # a tile covers what a global view covered in training: 32 px crop x sqrt(mean scale 0.7)
    assert enc.weights_card["tile"] == 27 and enc.weights_card["input_size"] == 24
    state, _ = ckpt.load_checkpoint(out)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, state["encoder"][k])
    assert load_encoder_any(out).embed_dim == 32


def test_resume_continues_from_last_checkpoint(screen: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pretrain(_cfg(screen, run, "optim.max_steps=2", "run.checkpoint_every=1"))
    trainer = Trainer(_cfg(screen, run, "optim.max_steps=4", "run.checkpoint_every=1"))
    assert trainer.resume()
    assert trainer.pos["step"] == 2
    assert int(trainer.method.step) == 2
    trainer.fit()
    assert trainer.pos["step"] == 4
    assert pd.read_csv(run / "log.csv")["step"].tolist() == [1, 2, 3, 4]


def test_interrupted_checkpoint_write_leaves_previous_loadable(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 5, {"x": torch.ones(2)}, {"model_name": "m"})
    broken = root / ".tmp_step_00000010_123"  # a writer killed mid-write leaves this
    broken.mkdir()
    (broken / "state.pt").write_bytes(b"\x00partial")
    half = root / "step_00000010"  # a final name without its files is not a checkpoint
    half.mkdir()
    state, meta = ckpt.load_checkpoint(root)
    assert meta["step"] == 5 and torch.equal(state["x"], torch.ones(2))


def test_bad_samples_skipped_and_counted_then_fail_past_fraction(
        screen: Path, tmp_path: Path) -> None:
    df = pd.read_csv(screen)
    bad = tmp_path / "corrupt.ome.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff")
    df.loc[0, "paths"] = str(bad)
    df.loc[1, "paths"] = str(tmp_path / "missing.tif")
    df["paths"] = [p if Path(p).is_absolute() else str(screen.parent / p) for p in df["paths"]]
    manifest = tmp_path / "with_bad.csv"
    df.to_csv(manifest, index=False)
    out = pretrain(_cfg(manifest, tmp_path / "ok", "optim.epochs=1",
                        "run.max_bad_fraction=0.5"))
    assert pd.read_csv(out / "log.csv")["bad_samples"].iloc[-1] >= 1
    with pytest.raises(BiofmError, match="could not be used"):
        pretrain(_cfg(manifest, tmp_path / "strict", "optim.epochs=1",
                      "run.max_bad_fraction=0.0"))


def test_diverging_loss_stops_with_checkpoint_intact(
        screen: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    pretrain(_cfg(screen, run, "optim.max_steps=1", "run.checkpoint_every=1"))
    trainer = Trainer(_cfg(screen, run, "optim.max_steps=3"))
    real_forward = trainer.method.forward

    def nan_forward(views: object) -> dict[str, object]:
        out = real_forward(views)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.method, "forward", nan_forward)
    with pytest.raises(DivergedError, match="last good checkpoint"):
        trainer.fit()
    state, meta = ckpt.load_checkpoint(run)
    assert meta["step"] == 1 and all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_config_rejects_unknown_key_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean optim\.lr"):
        load_config(PretrainConfig, None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"optim\.epochs must be int"):
        load_config(PretrainConfig, None, ["optim.epochs=ten"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  views:\n    n_globl: 2\n")
    with pytest.raises(ConfigError, match=r"data\.views\.n_globl"):
        load_config(PretrainConfig, bad)


def test_missing_manifest_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BiofmError, match="biofm data index"):
        Trainer(_cfg(tmp_path / "nope.csv", tmp_path / "run"))


@pytest.mark.parametrize(("name", "kwargs"), [
    ("boc_vit_tiny", "{patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}"),
    ("bioresnet18", "{stem_width: 8, widths: [8, 16, 16, 32], max_groups: 4}"),
])
def test_every_family_pretrains_and_exports(screen: Path, tmp_path: Path, name: str,
                                            kwargs: str) -> None:
    out = pretrain(_cfg(screen, tmp_path / "run", f"model.name={name}",
                        f"model.kwargs={kwargs}", "optim.max_steps=2",
                        "data.views={global_size: 32, local_size: 32, n_local: 1}"))
    log = pd.read_csv(out / "log.csv")
    assert log["step"].tolist() == [1, 2] and log["loss"].notna().all()
    enc = load_encoder(out / "encoder")
    assert enc.weights_card["model_name"] == name
    assert enc.weights_card["architecture"] in ("BoCViT", "BioResNet")


@pytest.mark.parametrize("objective", ["mae", "simclr", "wsdino", "supcon"])
def test_every_objective_trains_logs_and_exports(screen: Path, tmp_path: Path,
                                                 objective: str) -> None:
    out = pretrain(_cfg(screen, tmp_path / "run", f"objective={objective}",
                        "optim.max_steps=2", "weak.label=treatment",
                        "mae={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}",
                        "simclr={proj_hidden_dim: 32, proj_dim: 16}",
                        "weak={proj_hidden_dim: 32, proj_dim: 16, label: treatment}"))
    log = pd.read_csv(out / "log.csv")
    assert log["step"].tolist() == [1, 2] and log["loss"].notna().all()
    # monitoring: spread and effective rank of the batch's embeddings, per step
    assert (log["feature_std"] > 0).all() and (log["effective_rank"] > 1).all()
    assert (log["eta_s"] >= 0).all() and log["samples_per_s"].gt(0).all()
    if objective == "mae":
        assert {"loss_mse", "loss_fourier"} <= set(log.columns)
    enc = load_encoder(out / "encoder")
    assert enc.weights_card["objective"] == objective
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["objective"] == objective and (out / "run.yaml").is_file()


def test_weak_objective_without_label_column_names_it(screen: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"weak\.label=.compound"):
        Trainer(_cfg(screen, tmp_path / "run", "objective=supcon", "weak.label=compound"))


def test_bad_objective_settings_are_rejected(screen: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="objective='byol'"):
        Trainer(_cfg(screen, tmp_path / "a", "objective=byol"))
    with pytest.raises(ConfigError, match="multiple of 3"):
        Trainer(_cfg(screen, tmp_path / "b", "optim.accum_steps=3"))
    with pytest.raises(ConfigError, match="n_global=2"):
        Trainer(_cfg(screen, tmp_path / "c", "objective=simclr",
                     "data.views={n_global: 1, global_size: 24}"))
    with pytest.raises(ConfigError, match=r"run\.precision"):
        Trainer(_cfg(screen, tmp_path / "d", "run.precision=fp8"))


def test_bf16_autocast_fused_adamw_and_periodic_knn_probe(screen: Path,
                                                          tmp_path: Path) -> None:
    out = pretrain(_cfg(screen, tmp_path / "run", "optim.max_steps=4", "run.precision=bf16",
                        "optim.fused=true", f"run.probe_manifest={screen}",
                        "run.probe_every=2"))
    assert pd.read_csv(out / "log.csv")["loss"].notna().all()
    probe = pd.read_csv(out / "probe.csv")
    assert probe["step"].tolist() == [2, 4]  # every 2 steps and at the end
    assert probe["classes"].iloc[0] == 4 and probe["knn_top1"].between(0, 1).all()


def test_compiled_blocks_give_the_same_losses(screen: Path, tmp_path: Path) -> None:
    """``run.compile=true`` (regional torch.compile of the encoder blocks) trains the same."""
    eager = pretrain(_cfg(screen, tmp_path / "eager", "optim.max_steps=3"))
    compiled = pretrain(_cfg(screen, tmp_path / "compiled", "optim.max_steps=3",
                             "run.compile=true"))
    a = pd.read_csv(eager / "log.csv")["loss"].to_numpy()
    b = pd.read_csv(compiled / "log.csv")["loss"].to_numpy()
    assert abs(a - b).max() < 1e-3


def test_wsdino_needs_no_plate_column(screen: Path, tmp_path: Path) -> None:
    df = pd.read_csv(screen).drop(columns=["plate"])
    df["paths"] = [str(screen.parent / p) for p in df["paths"]]
    manifest = tmp_path / "no_plate.csv"
    df.to_csv(manifest, index=False)
    trainer = Trainer(_cfg(manifest, tmp_path / "run", "objective=wsdino"))
    assert len(trainer.dataset) == len(df)
    with pytest.raises(ConfigError, match=r"weak\.plate"):
        Trainer(_cfg(manifest, tmp_path / "run2", "objective=supcon"))


def test_source_normalisation_is_fitted_saved_and_carried_to_the_card(
        screen: Path, tmp_path: Path) -> None:  # fmt: skip
    out = pretrain(_cfg(screen, tmp_path / "run", "optim.max_steps=2",
                        "data.normalize={scope: source, group_by: plate}"))  # fmt: skip
    stats = json.loads((out / "norm_stats.json").read_text())
    assert stats["scope"] == "source" and stats["group_by"] == "plate" and stats["groups"]
    card = load_encoder(out / "encoder").weights_card
    assert card["normalize"]["scope"] == "source"
    assert card["normalize_stats"]["groups"] == stats["groups"]
    # a resumed run reuses the saved statistics instead of refitting
    (out / "norm_stats.json").write_text(json.dumps({**stats, "fitted_on": "kept"}))
    pretrain(_cfg(screen, tmp_path / "run", "optim.max_steps=3",
                  "data.normalize={scope: source, group_by: plate}"))  # fmt: skip
    assert json.loads((out / "norm_stats.json").read_text())["fitted_on"] == "kept"
