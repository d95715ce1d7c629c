"""What every self-supervised / weakly supervised objective provides to the trainer.

An objective is an ``nn.Module`` whose ``forward(views)`` takes a batch of views (a
``ViewBatch``: packed ``global_views``, optional ``local_views``, ``n_global``, ``n_local``,
``batch_size`` and per-sample ``meta`` dicts, view-major) and returns a dict with

* ``"loss"``: the scalar to minimise (a mean over this rank's samples, so that DDP's gradient
  average equals the gradient of the mean over the global batch);
* ``"features"``: (B, D) detached embeddings of this rank's samples (first global view) for the
  monitoring metrics;
* any number of float logs (``"loss_<term>"`` for each term of a composite loss).

``on_step_end()`` runs after each optimiser step (EMA teachers, step counters);
``export_encoder`` is the encoder saved at the end (DINO: the EMA teacher); ``step_grads(step)``
may edit gradients before the optimiser step (DINO freezes its last layer early on).
Objectives that need cross-sample terms (Sinkhorn, NT-Xent negatives) gather over ranks with
``biofm.core.dist`` so the loss is the same on 1 or N processes for one global batch.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from biofm.core.batch import PackedBatch


class Views(Protocol):
    global_views: PackedBatch
    local_views: PackedBatch | None
    n_global: int
    n_local: int
    batch_size: int
    meta: list[dict[str, Any]]


class Objective(nn.Module):
    """Base class: subclasses set ``name`` and implement ``forward``."""

    name: str = ""
    #: views each sample needs: (n_global, allows local views)
    needs_local_views: bool = False

    @property
    def export_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def encoder(self) -> nn.Module:
        raise NotImplementedError

    def encoders(self) -> list[nn.Module]:
        """The distinct encoders the objective trains or exports (DINO: student, teacher)."""
        return list({id(m): m for m in (self.encoder, self.export_encoder)}.values())

    def fsdp_units(self) -> list[nn.Module]:
        """Sub-modules sharded as separate FSDP units (each must be entered through its own
        ``forward``); the rest is sharded with the objective itself."""
        return self.encoders()

    def on_step_end(self) -> None:
        """Called after each optimiser step."""

    def step_grads(self, step: int) -> None:
        """Edit gradients after backward, before the optimiser step (default: nothing)."""
