"""Hugging Face Hub release: ``save_pretrained``/``from_pretrained`` through a folder, a push and
a download over real HTTP on loopback (an in-memory Hub stand-in), and the refusals of
``load_model`` (pickles, newer cards, tampered weights, unknown repos, no network)."""

from __future__ import annotations

import io
import json
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("huggingface_hub")
pytest.importorskip("safetensors")

from huggingface_hub import ModelCard
from huggingface_hub.errors import RepositoryNotFoundError

import biofm
from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.release.card import IncompatibleCardError, make_card, training_data
from biofm.release.hf import BiofmModel, export_hf
from biofm.release.modelcard import evaluation_from_tasks
from biofm.release.weights import save_release

from .hub_standin import HubStandIn, point_hub_at

FILES = ["README.md", "config.json", "model.safetensors"]
REPO = "biofm/test-tiny"
TASKS = {  # the JSON shape written by benchmarks/tasks.py
    "results": [
        {"task": "dsb_modality", "metric": "1nn_macro_f1", "method": "biofm", "value": 0.91234,
         "n": 120},
        {"task": "dsb_modality", "metric": "1nn_macro_f1", "method": "untrained", "value": 0.7,
         "n": 120},
        {"task": "defocus", "metric": "ridge_r2", "method": "biofm", "value": 0.55561, "n": 80},
        {"task": "defocus", "metric": "ridge_r2", "method": "pixel_pca", "value": 0.3, "n": 80},
    ],
    "machine": {"torch": torch.__version__, "threads": 2},
}


def _encoder(seed: int, card_dir: Path) -> nn.Module:
    torch.manual_seed(seed)
    model = biofm.create_model("biovit_tiny").eval()
    manifest = card_dir / "corpus.csv"
    manifest.write_text("id,source\na,dsb2018\nb,dsb2018\nc,bbbc022\n")
    model.weights_card = make_card(
        model, name=REPO, training=training_data(manifest),
        evaluation=evaluation_from_tasks(TASKS, "biofm"))
    return model


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    return _encoder(0, tmp_path_factory.mktemp("card"))


@pytest.fixture(scope="module")
def release(encoder: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The encoder's release folder (card, safetensors, README)."""
    return save_release(encoder, tmp_path_factory.mktemp("release"), encoder.weights_card)


@pytest.fixture(scope="module")
def batch() -> PackedBatch:
    g = torch.Generator().manual_seed(1)
    return PackedBatch.from_images(
        [torch.rand(3, 64, 64, generator=g), torch.rand(5, 64, 64, generator=g)],
        channel_ids=[[1, 2, 3], [1, 2, 3, 4, 5]])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        point_hub_at(monkeypatch, server.url, str(tmp_path / "hf_home"))
        yield server


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _embed(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch)


# -- 1. a local folder ---------------------------------------------------------------------
def test_save_pretrained_round_trip_and_model_card(
        encoder: nn.Module, batch: PackedBatch, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    BiofmModel.from_encoder(encoder).save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == FILES
    again = tmp_path / "again"
    BiofmModel.from_encoder(encoder).save_pretrained(again)
    for name in FILES:  # the same weights give the same bytes (and card sha256)
        assert (again / name).read_bytes() == (out / name).read_bytes(), name

    wrapped = BiofmModel.from_pretrained(out)
    loaded = biofm.load_model(out)
    _same_state(encoder, wrapped.encoder)
    _same_state(encoder, loaded)
    want = _embed(encoder, batch)
    assert want.shape == (2, encoder.embed_dim)
    assert torch.equal(_embed(wrapped, batch), want)
    assert torch.equal(_embed(loaded, batch), want)
    assert json.loads((out / "config.json").read_text())["weights_sha256"] == \
        loaded.weights_card["weights_sha256"]

    data = ModelCard.load(out / "README.md").data
    assert data.library_name == "biofm"
    assert data.license == "apache-2.0"
    assert data.pipeline_tag == "image-feature-extraction"
    assert {"microscopy", "channel-agnostic"} <= set(data.tags)
    assert data.datasets == ["bbbc022", "dsb2018"]
    assert data.metrics == ["f1", "r_squared"]
    results = {(r.dataset_type, r.metric_type): r for r in data.eval_results}
    assert set(results) == {("dsb_modality", "f1"), ("defocus", "r_squared")}
    assert results["dsb_modality", "f1"].metric_value == pytest.approx(0.9123)
    assert results["defocus", "r_squared"].metric_value == pytest.approx(0.5556)
    assert all(r.task_type == "image-feature-extraction" for r in data.eval_results)
    assert data.model_name == REPO


# -- 2. push and download over loopback ----------------------------------------------------
def test_push_then_load_over_http(hub: HubStandIn, encoder: nn.Module, batch: PackedBatch,
                                  tmp_path: Path) -> None:
    out = tmp_path / "export"
    url = export_hf(encoder, out, repo_id=REPO)
    first = hub.repos[REPO].commits[-1][0]
    assert url is not None and url.startswith(hub.url) and first in url
    remote = hub.files(REPO, first)
    for name in FILES:
        assert remote[name] == (out / name).read_bytes(), name
    assert ("POST", f"/api/models/{REPO}/preupload/main") in hub.requests
    assert ("POST", f"/api/models/{REPO}/commit/main") in hub.requests

    cache = tmp_path / "cache"
    loaded = biofm.load_model(REPO, cache_dir=cache)
    _same_state(encoder, loaded)
    assert torch.equal(_embed(loaded, batch), _embed(encoder, batch))
    assert ("GET", f"/{REPO}/resolve/{first}/model.safetensors") in hub.requests
    wrapped = BiofmModel.from_pretrained(REPO, cache_dir=cache)
    _same_state(encoder, wrapped.encoder)

    # a second push (the repo exists already) moves main; the first commit stays pinned
    other = _encoder(1, tmp_path)
    export_hf(other, tmp_path / "export2", repo_id=REPO)
    second = hub.repos[REPO].commits[-1][0]
    assert second != first and len(first) == 40
    _same_state(other, biofm.load_model(REPO, cache_dir=cache))
    _same_state(encoder, biofm.load_model(REPO, revision=first, cache_dir=cache))

    hub.stop()
    offline = biofm.load_model(REPO, cache_dir=cache, local_files_only=True)
    _same_state(other, offline)
    pinned = biofm.load_model(REPO, revision=first, cache_dir=cache, local_files_only=True)
    _same_state(encoder, pinned)
    with pytest.raises(BadInputError, match="Hugging Face Hub"):
        biofm.load_model(REPO, cache_dir=tmp_path / "empty_cache", local_files_only=True)


# -- 3. refusals ---------------------------------------------------------------------------
def _card(release: Path, **changes: Any) -> bytes:
    card = {**json.loads((release / "config.json").read_text()), **changes}
    return json.dumps(card).encode()


def test_pickled_weights_are_refused_unread(hub: HubStandIn, encoder: nn.Module, release: Path,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    torch.save(encoder.state_dict(), buf)
    hub.commit("biofm/pickled", {"config.json": _card(release), "pytorch_model.bin":
                                 buf.getvalue()})
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called on a downloaded file")
        return fail

    monkeypatch.setattr(torch, "load", forbidden("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", forbidden("torch.serialization.load"))
    monkeypatch.setattr(pickle, "load", forbidden("pickle.load"))
    monkeypatch.setattr(pickle, "loads", forbidden("pickle.loads"))
    with pytest.raises(BadInputError, match="safetensors") as err:
        biofm.load_model("biofm/pickled", cache_dir=tmp_path / "cache")
    assert not isinstance(err.value, IncompatibleCardError)
    assert calls == []
    assert not any(p.endswith("pytorch_model.bin") for _, p in hub.requests)


def test_newer_card_format_says_upgrade(hub: HubStandIn, release: Path, tmp_path: Path) -> None:
    hub.commit("biofm/future", {
        "config.json": _card(release, format="biofm-card/9"),
        "model.safetensors": (release / "model.safetensors").read_bytes()})
    with pytest.raises(IncompatibleCardError, match="biofm-card/9") as err:
        biofm.load_model("biofm/future", cache_dir=tmp_path / "cache")
    assert "pip install -U biofm" in str(err.value)


def test_weights_not_matching_card_sha256(hub: HubStandIn, release: Path,
                                          tmp_path: Path) -> None:
    tampered = _encoder(2, tmp_path)
    other = save_release(tampered, tmp_path / "other", tampered.weights_card)
    assert (other / "model.safetensors").read_bytes() != \
        (release / "model.safetensors").read_bytes()
    hub.commit("biofm/tampered", {
        "config.json": _card(release),
        "model.safetensors": (other / "model.safetensors").read_bytes()})
    with pytest.raises(BadInputError, match="sha256"):
        biofm.load_model("biofm/tampered", cache_dir=tmp_path / "cache")


def test_unknown_repo(hub: HubStandIn, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="biofm/no-such-model") as err:
        biofm.load_model("biofm/no-such-model", cache_dir=tmp_path / "cache")
    assert isinstance(err.value.__cause__, RepositoryNotFoundError)
    assert ("GET", "/api/models/biofm/no-such-model/revision/main") in hub.requests


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_hub_at(monkeypatch, f"http://127.0.0.1:{port}", str(tmp_path / "hf_home"))
    start = time.monotonic()
    with pytest.raises(BadInputError, match="network"):
        biofm.load_model("biofm/test-tiny", cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 10
    start = time.monotonic()
    with pytest.raises(BadInputError, match="network"):
        BiofmModel.from_pretrained("biofm/test-tiny", cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 10
