"""torch.hub: the entry points of ``hubconf.py`` and release files for a GitHub release.

``hub_model(arch, pretrained)`` builds a registered architecture and, when asked, loads
weights: ``pretrained=True`` takes the weights released for that architecture (shipped with
the package, see :data:`RELEASED`); a string is a release folder, a Hub repo id, or the URL of
a ``<name>-<sha256 prefix>.safetensors`` file written by :func:`export_torchhub` (its card
``<name>-<sha256 prefix>.json`` beside it). URL downloads go to torch.hub's cache and are
checked against the hash prefix in the file name; weights are read with safetensors only.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from biofm.core.errors import BadInputError
from biofm.models.registry import create_model
from biofm.release.card import check_card, load_state_strict, model_from_card, sha256_file
from biofm.release.pretrained import PRETRAINED

#: architecture -> the released weights ``pretrained=True`` loads
RELEASED: dict[str, str] = {arch: name for name, (arch, _) in PRETRAINED.items()}
_HASHED = re.compile(r"-([a-f0-9]{8,64})\.safetensors$")


def hub_model(arch: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """The ``arch`` encoder, with weights per ``pretrained`` (see the module docstring);
    ``kwargs`` go to ``create_model`` and are refused with pretrained weights."""
    if not pretrained:
        return create_model(arch, **kwargs).eval()
    if kwargs:
        raise BadInputError(f"architecture options {sorted(kwargs)} cannot be combined with "
                            "pretrained weights (they fix the architecture)",
                            "drop the options, or use pretrained=False")
    if pretrained is True:
        if arch not in RELEASED:
            raise BadInputError(
                f"no released weights for {arch}",
                f"use pretrained=False, pretrained='folder|org/name|URL', or an architecture "
                f"with weights: {', '.join(RELEASED)}")
        source: str = RELEASED[arch]
    else:
        source = str(pretrained)
    if urlparse(source).scheme in ("http", "https", "file"):
        model = load_from_url(source)
    else:
        from biofm.release.weights import load_model

        model = load_model(source)
    name = getattr(model, "model_name", None)
    if name != arch:
        raise BadInputError(f"the weights at {source} are for {name}, not {arch}",
                            f"load them with the '{name}' entry point")
    return model


def load_from_url(url: str, model_dir: str | Path | None = None) -> nn.Module:
    """Encoder from a ``<name>-<sha256 prefix>.safetensors`` URL and its ``.json`` card."""
    import torch.hub
    from safetensors.torch import load_file

    fname = Path(urlparse(url).path).name
    digest = _HASHED.search(fname)
    if digest is None:
        raise BadInputError(f"{fname} has no sha256 prefix in its name",
                            "use the files written by 'biofm export torchhub' "
                            "(NAME-<sha256 prefix>.safetensors)", url)
    folder = Path(model_dir or Path(torch.hub.get_dir()) / "checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    weights, card_file = folder / fname, folder / fname.replace(".safetensors", ".json")
    try:
        if not weights.is_file():
            torch.hub.download_url_to_file(url, str(weights), hash_prefix=digest.group(1),
                                           progress=False)
        if not card_file.is_file():
            card_url = url[: -len(".safetensors")] + ".json"
            torch.hub.download_url_to_file(card_url, str(card_file), progress=False)
    except RuntimeError as err:  # torch.hub's hash check
        raise BadInputError(f"download of {url} failed its check: {err}",
                            "the file was altered or truncated; publish it again", url) from err
    except OSError as err:
        raise BadInputError(f"cannot download {url}: {err}",
                            "check the URL and the network", url) from err
    if not sha256_file(weights).startswith(digest.group(1)):
        weights.unlink()
        raise BadInputError(f"cached {fname} does not match its hash", "load again", url)
    card = check_card(json.loads(card_file.read_text()), url)
    model = model_from_card(card, url)
    load_state_strict(model, load_file(str(weights)), url)
    model.weights_card = card  # type: ignore[assignment]
    return model.eval()


def export_torchhub(model: nn.Module, out_dir: str | Path) -> dict[str, str]:
    """Write ``model``'s weights and release card to ``out_dir`` as
    ``<name>-<sha256[:8]>.safetensors`` / ``.json``, ready to attach to a GitHub release;
    returns the file paths and the ``torch.hub.load`` line that loads them."""
    import tempfile

    from biofm._version import __version__
    from biofm.release.card import release_card
    from biofm.release.weights import CARD_FILE, WEIGHTS_FILE, save_release

    card = release_card(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        save_release(model, tmp, card, readme=False)
        sha = sha256_file(Path(tmp) / WEIGHTS_FILE)
        stem = f"{card['name']}-{sha[:8]}"
        shutil.move(Path(tmp) / WEIGHTS_FILE, out / f"{stem}.safetensors")
        shutil.move(Path(tmp) / CARD_FILE, out / f"{stem}.json")
    url = f"https://github.com/biofm/biofm/releases/download/v{__version__}/{stem}.safetensors"
    return {"weights": str(out / f"{stem}.safetensors"), "card": str(out / f"{stem}.json"),
            "usage": f'torch.hub.load("biofm/biofm:v{__version__}", "{card["model_name"]}", '
                     f'pretrained="{url}", trust_repo=True)'}
