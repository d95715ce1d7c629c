"""The weights card: what a released encoder is and exactly how to feed it.

A card is one JSON object (``config.json`` of a release folder). It carries

* ``format`` (``biofm-card/1``), ``name``, ``biofm_version``, ``license``;
* the architecture: ``model_name`` + ``model_kwargs`` (rebuilt with ``biofm.create_model``),
  ``embed_dim``, ``num_blocks``, ``num_params``, ``channel_vocab`` (the channel ids the
  weights were trained with);
* the input protocol: ``input_size``, ``crop_size``, ``pixel_size_um``, ``normalize``;
* ``training`` (objective, steps, data sources with counts and licences, manifest hash,
  code commit) and ``evaluation`` (task scores beside the baselines);
* ``weights_sha256`` of ``model.safetensors``.

Encoder folders written by ``biofm train`` (``encoder.json``, format ``biofm-encoder/1``) are
read as cards too. :func:`check_card` refuses a card this biofm cannot honour, and says why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biofm._version import __version__
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.models.registry import create_model, list_models

CARD_FORMAT = "biofm-card/1"
READABLE_FORMATS = ("biofm-card/1", "biofm-encoder/1")
_UPGRADE = "pip install -U biofm"


class IncompatibleCardError(BadInputError):
    """A weights card this version of biofm cannot load."""


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def check_card(card: Any, where: str) -> dict[str, Any]:
    """The card as a dict if this biofm can load it, else :class:`IncompatibleCardError`."""
    if not isinstance(card, Mapping):
        raise IncompatibleCardError("the weights card is not a JSON object",
                                    "point at a folder written by biofm", where)
    fmt = str(card.get("format", ""))
    if fmt not in READABLE_FORMATS:
        newer = fmt.startswith("biofm-card/")
        raise IncompatibleCardError(
            f"card format {fmt or 'missing'!r} is not one this biofm {__version__} reads "
            f"({', '.join(READABLE_FORMATS)})",
            _UPGRADE if newer else "point at a biofm release or encoder folder", where)
    missing = [k for k in ("model_name", "embed_dim") if k not in card]
    if missing:
        raise IncompatibleCardError(f"the card lacks {', '.join(missing)}",
                                    "re-export the model with biofm", where)
    written = str(card.get("biofm_version", "0"))
    if _version_tuple(written)[:2] > _version_tuple(__version__)[:2]:
        raise IncompatibleCardError(
            f"the weights were written by biofm {written}, newer than this biofm {__version__}",
            _UPGRADE, where)
    if card["model_name"] not in list_models():
        raise IncompatibleCardError(
            f"architecture {card['model_name']!r} is not in biofm {__version__}", _UPGRADE, where)
    vocab = card.get("channel_vocab")
    if vocab and list(vocab) != list(DEFAULT_VOCAB.names[: len(vocab)]):
        raise IncompatibleCardError(
            "the weights were trained with another channel vocabulary than this biofm's "
            "(channel ids would mean other stains)",
            "load them with the biofm version named in the card", where)
    return dict(card)


def model_from_card(card: Mapping[str, Any], where: str) -> nn.Module:
    """The card's architecture with fresh weights; its embedding size checked."""
    try:
        model = create_model(card["model_name"], **dict(card.get("model_kwargs") or {}))
    except TypeError as err:
        raise IncompatibleCardError(f"model_kwargs do not fit {card['model_name']}: {err}",
                                    _UPGRADE, where) from err
    if int(model.embed_dim) != int(card["embed_dim"]):  # type: ignore[arg-type]
        raise IncompatibleCardError(
            f"the card says embed_dim {card['embed_dim']} but {card['model_name']} with these "
            f"model_kwargs builds {model.embed_dim}",
            "the card does not describe these weights; re-export them", where)
    return model


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatching keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra),
                                     ("wrong shape", sorted(shapes))) if keys]
        raise IncompatibleCardError("the weights do not match the card's architecture: "
                                    + "; ".join(parts),
                                    "the weights file and card belong to different models", where)
    model.load_state_dict(dict(state), strict=True)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_data(manifest: str | Path) -> dict[str, Any]:
    """Sources of a training manifest with image counts, licences and the manifest's hash."""
    import pandas as pd

    from biofm.io.corpus import PROVENANCE

    path = Path(manifest)
    if not path.is_file():
        raise BadInputError(f"training manifest {path} not found",
                            "pass the manifest the model was trained on (corpus.csv)")
    df = pd.read_csv(path, usecols=lambda c: c in ("id", "source"))
    if "source" not in df.columns:
        df["source"] = "unknown"
    sources = []
    for src, n in df["source"].fillna("unknown").value_counts().sort_index().items():
        info = PROVENANCE.get(str(src), {"dataset": str(src), "licence": "unknown"})
        sources.append({"source": str(src), "images": int(n), **info})
    return {"manifest": path.name, "manifest_sha256": sha256_file(path),
            "images": len(df), "sources": sources}


def make_card(model: nn.Module, *, name: str, base: Mapping[str, Any] | None = None,
              training: Mapping[str, Any] | None = None,
              evaluation: Mapping[str, Any] | None = None,
              license: str = "apache-2.0") -> dict[str, Any]:
    """A release card: the model's own description over ``base`` (e.g. its training card)."""
    arch = model.card() if hasattr(model, "card") else {}  # type: ignore[operator]
    card: dict[str, Any] = {**dict(base or {}), **arch}
    card.update(format=CARD_FORMAT, name=name, biofm_version=__version__, license=license)
    card.setdefault("input_size", 96)
    card.setdefault("pixel_size_um", None)
    if training is not None:
        card["training"] = dict(training)
    if evaluation is not None:
        card["evaluation"] = dict(evaluation)
    return check_card(card, name)


def release_card(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """``model``'s card as a release card (an encoder card of ``biofm train`` is upgraded)."""
    card = dict(getattr(model, "weights_card", None) or {})
    if card.get("format") == CARD_FORMAT and (name is None or card.get("name") == name):
        return check_card(card, str(card.get("name")))
    default = str(card.get("name") or getattr(model, "model_name", "biofm-model"))
    return make_card(model, name=name or default.replace("_", "-"), base=card)
