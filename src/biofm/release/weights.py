"""Release folders (``config.json`` card + ``model.safetensors`` + ``README.md``) and
:func:`load_model`, the one entry point that loads any biofm encoder.

A release folder has the Hugging Face layout, so the same folder is what ``save_pretrained``
writes, what the Hub serves and what the package ships. Weights are read with safetensors
only: nothing downloaded is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from biofm.core.errors import BadInputError, MissingExtraError
from biofm.release.card import check_card, load_state_strict, model_from_card, sha256_file
from biofm.release.pretrained import DEFAULT_MODEL, PRETRAINED, pretrained_dir

CARD_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
README_FILE = "README.md"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def save_release(model: nn.Module, out_dir: str | Path, card: Mapping[str, Any],
                 readme: bool = True) -> Path:
    """Write ``model.safetensors``, ``config.json`` (the card, with the weights' sha256) and
    ``README.md`` (the model card) into ``out_dir``; each file is written then renamed."""
    from safetensors.torch import save_file

    from biofm.release.modelcard import model_card_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    # one metadata key: safetensors writes its metadata map in no fixed order, and the same
    # weights should give the same bytes (and sha256)
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    card = {**card, "weights_sha256": sha256_file(tmp)}
    os.replace(tmp, out / WEIGHTS_FILE)
    files = {CARD_FILE: json.dumps(card, indent=2, default=str) + "\n"}
    if readme:
        files[README_FILE] = model_card_markdown(card)
    for name, text in files.items():
        (out / f".{name}.tmp").write_text(text, encoding="utf-8")
        os.replace(out / f".{name}.tmp", out / name)
    return out


def read_card(folder: str | Path, where: str | None = None) -> dict[str, Any]:
    """The checked card of a release folder."""
    path = Path(folder) / CARD_FILE
    where = where or str(folder)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BadInputError(f"no {CARD_FILE} in {folder}",
                            "point at a biofm release folder", where) from err
    except json.JSONDecodeError as err:
        raise BadInputError(f"{CARD_FILE} is not valid JSON ({err})",
                            "re-export or re-download the model", where) from err
    return check_card(card, where)


def load_release_dir(folder: str | Path, where: str | None = None) -> nn.Module:
    """The encoder of a release folder, strict, in eval mode, its card as ``weights_card``."""
    from safetensors.torch import load_file

    where = where or str(folder)
    card = read_card(folder, where)
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise BadInputError(f"no {WEIGHTS_FILE} beside the card",
                            "biofm loads safetensors weights only (it never unpickles "
                            "downloaded files); export the weights with save_release", where)
    expected = card.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise BadInputError(f"{WEIGHTS_FILE} does not match the sha256 in its card "
                            "(corrupt or replaced file)", "re-download or re-export it", where)
    model = model_from_card(card, where)
    load_state_strict(model, load_file(str(weights)), where)
    model.weights_card = card  # type: ignore[assignment]
    return model.eval()


def load_model(source: str | Path | None = None, *, revision: str | None = None,
               cache_dir: str | Path | None = None, local_files_only: bool = False) -> nn.Module:
    """Load an encoder from a released name, a local folder or a Hugging Face repo id.

    ``source`` is, in this order: a model shipped with the package (``biofm-vit-tiny``; see
    ``biofm.release.PRETRAINED``); an existing path (a release folder, an encoder folder or a
    ``biofm train`` run directory); a Hub repo id ``org/name`` (needs ``biofm[hub]``;
    ``revision`` pins a tag or commit, ``local_files_only`` or ``HF_HUB_OFFLINE=1`` uses
    the cache only). Without ``source``, the recommended shipped model (``DEFAULT_MODEL``).
    Weights load with ``strict=True``; an incompatible card is refused."""
    text = DEFAULT_MODEL if source is None else str(source)
    if text in PRETRAINED:
        return load_release_dir(pretrained_dir(text), text)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.name in (CARD_FILE, WEIGHTS_FILE):
            path = path.parent
        if (path / CARD_FILE).is_file():
            return load_release_dir(path, text)
        from biofm.models.io import load_encoder_any

        return load_encoder_any(path)
    if _REPO_ID.fullmatch(text):
        return load_release_dir(_download(text, revision, cache_dir, local_files_only), text)
    raise BadInputError(
        f"model {text!r} is neither a released name, an existing path nor a Hub repo id",
        f"use one of {', '.join(PRETRAINED)}, a folder, or org/name", text)


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None,
              local_files_only: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise MissingExtraError("huggingface_hub", "hub") from err
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                   local_files_only=local_files_only,
                                   allow_patterns=[CARD_FILE, WEIGHTS_FILE, README_FILE])
    except Exception as err:  # the hub client raises many types (HTTP, offline, not found)
        raise BadInputError(
            f"no local path {repo_id!r}, and fetching it from the Hugging Face Hub failed: "
            f"{type(err).__name__}: {err}",
            "check the repo id and the network; offline, only models downloaded before load "
            "(from the Hub cache)", repo_id) from err
    return Path(folder)
