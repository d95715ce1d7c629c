"""What a checkpoint holds and how a run is restored from it, on one or many processes.

The objective and optimiser states are full (unsharded) tensors, so a run written under FSDP
resumes under DDP or on one process and the other way round. Each rank's data position,
bad-sample counts and RNG states are gathered into the checkpoint; a run resumed on the same
number of processes gets its own rank's states back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from biofm.core import dist
from biofm.core.errors import ConfigError
from biofm.data.badsamples import BadSampleCounter
from biofm.models.registry import create_model

if TYPE_CHECKING:
    from biofm.train.pretrain import Trainer

log = logging.getLogger(__name__)


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_and_optim_state(t: Trainer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full state dicts of the objective and the optimiser, the optimiser's keyed by parameter
    name, so any strategy can load them (a collective under FSDP; rank 0 holds the result)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(t.method, t.opt, options=_options())


def model_state(t: Trainer) -> dict[str, Any]:
    """Full state dict of the objective alone (a collective under FSDP; rank 0 holds it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(t.method, options=_options())


def export_prefix(method: nn.Module) -> str:
    """The state-dict prefix of the encoder the objective exports (DINO: ``teacher.``)."""
    target = method.export_encoder
    for name, mod in method.named_modules():
        if mod is target and name:
            return name + "."
    return ""


def export_state(t: Trainer, method_state: dict[str, Any]) -> dict[str, Any]:
    """The exported encoder's entries of the objective's state dict, prefix removed."""
    prefix = export_prefix(t.method)
    return {k[len(prefix):]: v for k, v in method_state.items() if k.startswith(prefix)}


def encoder_from_state(t: Trainer, encoder_state: dict[str, Any]) -> nn.Module:
    """A fresh CPU copy of the exported encoder with the weights ``encoder_state``."""
    enc = create_model(t.cfg.model.name, **t.cfg.model.kwargs)
    enc.load_state_dict(encoder_state, strict=True)
    return enc


def _rank_state(t: Trainer) -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None
    return {"rank": t.rank, "epoch": t.pos["epoch"], "step_in_epoch": t.pos["step_in_epoch"],
            "micro_batch": t.source.micro_batch, "data": t.source.state_dict(),
            "bad_seen": t.bad.seen, "bad": t.bad.bad,
            "bad_ids": list(t.bad.ids), "rng_cpu": torch.get_rng_state(), "rng_cuda": cuda}


def run_state(t: Trainer) -> dict[str, Any]:
    """Everything needed to resume (every rank must call it)."""
    method, optim = model_and_optim_state(t)
    ranks = dist.all_gather_object(_rank_state(t))
    return {
        "method": method, "optimizer": optim, "position": dict(t.pos),
        "encoder": export_state(t, method),
        "world_size": t.world, "global_batch": t.cfg.data.batch_size, "ranks": ranks,
    }


def load_run_state(t: Trainer, state: dict[str, Any]) -> tuple[dict[str, int], BadSampleCounter]:
    """Restore objective, optimiser and this rank's RNG; returns (position, bad counter)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    optim = state["optimizer"]
    if any(isinstance(k, int) for k in optim.get("state", {})):  # index-keyed (older runs)
        t.method.load_state_dict(state["method"])
        t.opt.load_state_dict(optim)
    else:
        set_state_dict(t.method, t.opt, model_state_dict=state["method"],
                       optim_state_dict=optim, options=_options())
    pos = {k: int(v) for k, v in state["position"].items()}
    pos.setdefault("step_in_epoch", pos.pop("batch_in_epoch", 0))
    ranks = state.get("ranks", [])
    if state.get("global_batch", t.cfg.data.batch_size) != t.cfg.data.batch_size:
        log.warning("data.batch_size changed since the checkpoint: the rest of the epoch "
                    "is split into new batches from the same step")
    if len(ranks) == t.world:
        r = ranks[t.rank]
        torch.set_rng_state(r["rng_cpu"])
        if r["rng_cuda"] is not None and t.device.type == "cuda":
            torch.cuda.set_rng_state(r["rng_cuda"], t.device)
        bad = BadSampleCounter(seen=r["bad_seen"], bad=r["bad"], ids=list(r["bad_ids"]))
        t.source.load_state_dict(r.get("data"))
    else:
        if any((r.get("data") or {}).get("stream") for r in ranks):
            raise ConfigError(
                f"this run streams its data and was saved on {len(ranks)} processes; it "
                f"cannot resume on {t.world}", f"resume with {len(ranks)} processes")
        log.warning("resuming %d-process checkpoint on %d processes: data position kept, "
                    "RNG states reseeded", len(ranks), t.world)
        seen = sum(r["bad_seen"] for r in ranks) if t.rank == 0 else 0
        n_bad = sum(r["bad"] for r in ranks) if t.rank == 0 else 0
        bad = BadSampleCounter(seen=seen, bad=n_bad)
    return pos, bad
