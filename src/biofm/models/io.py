"""Save and load encoders: safetensors weights plus a JSON description (never unpickled)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biofm._version import __version__
from biofm.core.errors import BadInputError
from biofm.models.base import Encoder
from biofm.models.registry import create_model

WEIGHTS = "encoder.safetensors"
CARD = "encoder.json"


def save_encoder(model: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None
                 ) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` (the model's card, version, ``extra``).

    The loaded model keeps the card as ``weights_card``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = model.card() if isinstance(model, Encoder) else {
        "model_name": getattr(model, "model_name", None),
        "model_kwargs": getattr(model, "model_kwargs", {}),
        "embed_dim": int(model.embed_dim),  # type: ignore[arg-type]
    }
    card = {"format": "biofm-encoder/1", "biofm_version": __version__, **arch, **(extra or {})}
    if card["model_name"] is None:
        raise BadInputError("the model has no registry name", "build it with biofm.create_model")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    (out / f".{CARD}.tmp").write_text(json.dumps(card, indent=2, default=str))
    os.replace(out / f".{CARD}.tmp", out / CARD)
    return out


def load_encoder(path: str | Path) -> nn.Module:
    """Load an encoder directory written by :func:`save_encoder` (strict, eval mode)."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS, CARD):
        p = p.parent
    if not (p / WEIGHTS).is_file() or not (p / CARD).is_file():
        raise BadInputError(
            f"{p} holds no {WEIGHTS} + {CARD}",
            "pass the run directory of 'biofm train' (it exports encoder/ at the end) or a "
            "folder written by biofm.models.io.save_encoder",
        )
    card = json.loads((p / CARD).read_text())
    model = create_model(card["model_name"], **card.get("model_kwargs", {}))
    state = load_file(str(p / WEIGHTS))
    model.load_state_dict(state, strict=True)
    model.weights_card = card
    return model.eval()


def state_dict_to_encoder(name: str, kwargs: dict[str, Any],
                          state: dict[str, torch.Tensor]) -> nn.Module:
    model = create_model(name, **kwargs)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_encoder_any(path: str | Path) -> nn.Module:
    """Encoder from a run directory (its ``encoder/``), an encoder folder, or a training
    checkpoint (``checkpoints/step_*``: the teacher's weights)."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"model path {p} does not exist",
                            "pass a run directory of 'biofm train' or an encoder folder")
    for cand in (p, p / "encoder"):
        if (cand / WEIGHTS).is_file():
            return load_encoder(cand)
    ckpts = [p] if (p / "state.pt").is_file() else sorted((p / "checkpoints").glob("step_*"))
    ckpts = [c for c in ckpts if (c / "state.pt").is_file() and (c / "meta.json").is_file()]
    if not ckpts:
        raise BadInputError(f"no encoder or checkpoint under {p}",
                            "pass a run directory of 'biofm train' or an encoder folder")
    meta = json.loads((ckpts[-1] / "meta.json").read_text())
    state = torch.load(ckpts[-1] / "state.pt", map_location="cpu", weights_only=True)
    model = state_dict_to_encoder(meta["model_name"], meta.get("model_kwargs", {}),
                                  state["encoder"])
    model.weights_card = meta.get("card", {})
    return model
