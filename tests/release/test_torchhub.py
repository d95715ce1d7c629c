"""torch.hub: hubconf.py entry points loaded with source="local", and released weights fetched
by URL from a real HTTP server on loopback, checked against the hash in their file name."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import biofm
from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.release import save_release
from biofm.release.card import make_card
from biofm.release.torchhub import export_torchhub

REPO = Path(__file__).resolve().parents[2]
SMALL = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1; yields (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def _hub(entry: str, **kwargs: object) -> torch.nn.Module:
    return torch.hub.load(str(REPO), entry, source="local", trust_repo=True, verbose=False,
                          **kwargs)


def _batch() -> PackedBatch:
    g = torch.Generator().manual_seed(1)
    return PackedBatch.from_images([torch.rand(2, 32, 32, generator=g)], [[1, 2]])


def test_entry_points_are_documented_and_dependencies_light() -> None:
    # what torch.hub.list/help read: public callables of hubconf and their docstrings
    spec = importlib.util.spec_from_file_location("biofm_hubconf", REPO / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert entries == {"biovit_tiny", "biovit_small", "biovit_base", "boc_vit_small",
                       "bioresnet18", "bioresnet50"}
    assert all(getattr(hubconf, n).__doc__ for n in entries)
    assert "pretrained=True" in hubconf.biovit_tiny.__doc__
    assert all(importlib.util.find_spec(d) for d in hubconf.dependencies)
    # building a model through the entry points imports none of the heavy optional packages
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('h', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m.biovit_tiny(); "
            "print(sorted(set(sys.modules) & {'pandas', 'zarr', 'tifffile', 'sklearn', "
            "'matplotlib', 'huggingface_hub'}))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "hubconf.py")], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_fresh_models_take_architecture_options() -> None:
    model = _hub("biovit_tiny", pretrained=False, **SMALL)
    assert model.embed_dim == 32 and model.model_name == "biovit_tiny"
    assert _hub("bioresnet18").embed_dim == 512


def test_unreleased_weights_and_options_with_weights_are_refused() -> None:
    with pytest.raises(BadInputError, match="no released weights for biovit_small"):
        _hub("biovit_small", pretrained=True)
    with pytest.raises(BadInputError, match="cannot be combined"):
        _hub("biovit_tiny", pretrained=True, depth=2)


def test_weights_by_url_are_hash_checked_and_cached(served: tuple[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    base, www = served
    model = biofm.create_model("biovit_tiny", **SMALL)
    model.weights_card = make_card(model, name="tiny-hub")
    files = export_torchhub(model, www)
    weights = Path(files["weights"])
    assert weights.name.startswith("tiny-hub-") and "pretrained=" in files["usage"]
    url = f"{base}/{weights.name}"
    loaded = _hub("biovit_tiny", pretrained=url)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_batch()), model.eval()(_batch()), rtol=0, atol=0)
    assert loaded.weights_card["name"] == "tiny-hub"
    # the second load reads torch.hub's cache: the server no longer has the files
    weights.unlink()
    Path(files["card"]).unlink()
    assert _hub("biovit_tiny", pretrained=url).weights_card["name"] == "tiny-hub"
    with pytest.raises(BadInputError, match="are for biovit_tiny"):
        _hub("bioresnet18", pretrained=url)


def test_altered_download_is_refused(served: tuple[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    base, www = served
    model = biofm.create_model("biovit_tiny", **SMALL)
    model.weights_card = make_card(model, name="tiny-hub")
    weights = Path(export_torchhub(model, www)["weights"])
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="failed its check"):
        _hub("biovit_tiny", pretrained=f"{base}/{weights.name}")
    with pytest.raises(BadInputError, match="sha256 prefix"):
        _hub("biovit_tiny", pretrained=f"{base}/plain.safetensors")
    with pytest.raises(BadInputError, match="cannot download"):
        _hub("biovit_tiny", pretrained=f"{base}/missing-0123abcd.safetensors")


def test_release_folder_as_pretrained(tmp_path: Path) -> None:
    model = biofm.create_model("biovit_tiny", **SMALL)
    folder = save_release(model, tmp_path / "rel", make_card(model, name="tiny-folder"))
    assert _hub("biovit_tiny", pretrained=str(folder)).weights_card["name"] == "tiny-folder"


def test_shipped_weights_load_through_torch_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _hub("biovit_tiny", pretrained=True)
    assert model.weights_card["name"] == "biofm-vit-tiny"
