"""Weak supervision from screen metadata: treatment / compound / gene labels as contrastive
classes (supervised contrastive learning, Khosla et al. 2020, over all global views).

Positives of a view are every view of every sample with the same label (its own other views
included). With ``same_plate_negatives`` only different-label views *from the same plate* are
negatives, so the model is never rewarded for telling plates (batches) apart: plate effects
cannot lower the loss. A sample whose label is missing is its own class.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biofm.core import dist
from biofm.core.errors import ConfigError
from biofm.ssl.base import Views
from biofm.ssl.simclr import ContrastiveObjective, gather_rows, pair_stats, supcon_loss

_NO_INDEX = -(1 << 40)
"""Missing labels of samples without a dataset index count down from here (per rank)."""


@dataclass(frozen=True)
class WeakConfig:
    """``label``/``plate``: manifest columns. A sample with a missing label is its own class
    (a negative of the others); one with a missing plate has no negatives when
    ``same_plate_negatives`` (its views still pull towards its positives)."""

    label: str = "treatment"
    plate: str = "plate"
    same_plate_negatives: bool = True
    temperature: float = 0.1
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    # weight of an instance term (the views of one sample are its only positives, negatives
    # as above) mixed into the loss: with labels that barely show in single images, the
    # label term alone pulls everything together and collapses (measured, docs/results.md)
    instance_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.instance_weight <= 1.0:
            raise ConfigError(f"weak.instance_weight={self.instance_weight}",
                              "give a weight in [0, 1] (0: label term only)")


def is_missing(value: Any) -> bool:
    """None, NaN and empty / blank strings are missing labels."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def _stable_code(value: Any) -> int:
    """A non-negative 62-bit code of ``value``'s text, the same in every process
    (``hash()`` is salted per process). Integral floats code like ints (3.0 == 3)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    digest = hashlib.blake2b(str(value).strip().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def label_codes(meta: list[dict[str, Any]], column: str) -> torch.Tensor:
    """(B,) int64 codes of ``meta[i][column]``: equal values get equal codes on every rank.

    A missing value gets a negative code unique to its sample, ``-(index + 1)`` from the
    dataset index ``meta[i]["index"]`` (the same on every rank), so only the sample's own
    views are its positives. Raises ConfigError when no sample has the column at all.
    """
    if meta and not any(column in m for m in meta):
        raise ConfigError(
            f"column {column!r} is not in the sample metadata (it has: "
            f"{sorted(set().union(*meta))})", f"add a {column!r} column to the manifest or "
            "choose another column for the weak labels")
    codes = []
    for pos, m in enumerate(meta):
        value = m.get(column)
        if not is_missing(value):
            codes.append(_stable_code(value))
        elif m.get("index") is not None:
            codes.append(-(int(m["index"]) + 1))
        else:
            codes.append(_NO_INDEX - (dist.rank() << 24) - pos)
    return torch.tensor(codes, dtype=torch.long)


def check_weak_columns(df_columns: Iterable[str], cfg: WeakConfig,
                       section: str = "weak") -> None:
    """Fail early when the manifest lacks a column the weak objective needs.

    ``section`` is the config section holding ``cfg`` (``weak``), used to name the key.
    """
    columns = sorted(str(c) for c in df_columns)
    needed = [("label", cfg.label)]
    if cfg.same_plate_negatives:
        needed.append(("plate", cfg.plate))
    for key, column in needed:
        if column not in columns:
            extra = (f", or set {section}.same_plate_negatives=false"
                     if key == "plate" else "")
            raise ConfigError(
                f"{section}.{key}={column!r} is not a manifest column (columns: {columns})",
                f"set {section}.{key} to one of the columns{extra}")


class SupCon(ContrastiveObjective):
    """Backbone + projection head trained with the supervised contrastive loss on weak labels
    from the per-sample metadata (``views.meta``)."""

    name = "supcon"

    def __init__(self, backbone: nn.Module, cfg: WeakConfig, total_steps: int) -> None:
        super().__init__(backbone, cfg.proj_hidden_dim, cfg.proj_dim, total_steps)
        self.cfg = cfg

    def _codes(self, views: Views) -> torch.Tensor:
        """(V*B, 3) label, plate and sample codes of every global view (view-major)."""
        if len(views.meta) != views.batch_size:
            raise ConfigError(
                f"supcon needs one metadata dict per sample, got {len(views.meta)} for "
                f"{views.batch_size} samples", "collate batches with collate_views")
        labels = label_codes(views.meta, self.cfg.label)
        plates = (label_codes(views.meta, self.cfg.plate) if self.cfg.same_plate_negatives
                  else torch.zeros_like(labels))
        sample = torch.arange(views.batch_size) + (dist.rank() << 32)  # unique over ranks
        return torch.stack([labels, plates, sample], dim=1).repeat(views.n_global, 1)

    def forward(self, views: Views) -> dict[str, Any]:
        b = views.batch_size
        codes = self._codes(views)
        emb = self.backbone(views.global_views)  # (V*B, D)
        z = F.normalize(self.head(emb).float(), dim=-1)  # (V*B, P)
        z_all, c_all, own = gather_rows(z, codes.to(z.device))
        labels, plates = c_all[:, 0], c_all[:, 1]
        neg_mask = (plates[:, None] == plates[None, :]
                    if self.cfg.same_plate_negatives else None)  # (N, N)
        t, w = self.cfg.temperature, self.cfg.instance_weight
        label_term = supcon_loss(z_all, labels, t, anchors=own, neg_mask=neg_mask)
        instance = (supcon_loss(z_all, c_all[:, 2], t, anchors=own, neg_mask=neg_mask)
                    if w > 0 else label_term.new_zeros(()))
        loss = (1 - w) * label_term + w * instance
        stats = pair_stats(z_all.detach(), labels, own, neg_mask)
        return {"loss": loss, "features": emb[:b].detach(), "loss_label": float(label_term),
                "loss_instance": float(instance), **stats}
