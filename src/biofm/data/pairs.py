"""WS-DINO pairing (Cross-Zamirski et al., 2022): DINO where some views of a sample come from a
different image of the same treatment, so the invariance learned is "same treatment" rather
than "same image".

``WeakPairDataset`` wraps a ``ManifestDataset``. Item ``i`` keeps the base item's views except
global view 1 (when there are 2 or more) and every second local view (local views 1, 3, ...),
which come from a *partner* item ``j``: a crop of another field with the same label, drawn from
(seed, epoch, i). Fallbacks: another crop of the same field when no other field has the label;
the plain item when the label is missing, the field has no other crop, or the partner is a bad
sample.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from biofm.core.errors import ConfigError
from biofm.data.collate import Item, Skipped
from biofm.data.dataset import ManifestDataset
from biofm.data.rng import generator_for, randint

log = logging.getLogger(__name__)

_PAIR_STREAM = 0x9A1B
"""Extra key of the partner draw, so it is independent of the item's own crops and views."""


def _label_key(value: Any) -> str | None:
    """Manifest value -> grouping key; None for a missing label (None, NaN, blank)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class WeakPairDataset(Dataset[Item]):
    """``base`` items whose second global view and every second local view come from another
    field with the same ``label`` (a manifest column). See the module docstring."""

    def __init__(self, base: ManifestDataset, label: str) -> None:
        columns = sorted(set().union(*(r.keys() for r in base.rows))) if base.rows else []
        if label not in columns:
            raise ConfigError(f"pairing column {label!r} is not in the manifest (columns: "
                              f"{columns})", "choose one of the manifest's columns as the "
                              "weak label (e.g. treatment, compound or gene)")
        self.base = base
        self.label = label
        self.bounds = base.field_bounds()  # (F + 1,)
        self.field_keys = [_label_key(r.get(label)) for r in base.rows]
        groups: dict[str, list[int]] = {}
        for f, key in enumerate(self.field_keys):
            if key is not None:
                groups.setdefault(key, []).append(f)
        counts = np.diff(self.bounds)
        #: label -> (fields (G,), cumulative item counts (G + 1,)) of its fields
        self.groups = {k: (np.asarray(fs), np.concatenate([[0], np.cumsum(counts[fs])]))
                       for k, fs in groups.items()}

    # ------------------------------------------------------------------ forwarded
    def __len__(self) -> int:
        return len(self.base)

    @property
    def epoch(self) -> int:
        return self.base.epoch

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.base.rows

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        return self.base.locate(index)

    def sample_id(self, field_index: int) -> str:
        return self.base.sample_id(field_index)

    # ------------------------------------------------------------------ pairing
    def partner(self, index: int) -> int | None:
        """The partner item of ``index`` this epoch (None: unpaired). Deterministic in
        (seed, epoch, index)."""
        f, k = self.locate(index)
        key = self.field_keys[f]
        if key is None:
            return None
        fields, cum = self.groups[key]
        g = int(np.searchsorted(fields, f))
        others = int(cum[-1] - (cum[g + 1] - cum[g]))  # items of the other fields
        gen = generator_for(self.seed, self.epoch, index, _PAIR_STREAM)
        if others > 0:
            r = randint(gen, others)
            r = r if r < cum[g] else r + int(cum[g + 1] - cum[g])  # skip field f's items
            p = int(np.searchsorted(cum, r, side="right")) - 1
            return int(self.bounds[fields[p]] + r - cum[p])
        n_crops = int(self.bounds[f + 1] - self.bounds[f])
        if n_crops < 2:
            return None
        r = randint(gen, n_crops - 1)
        return int(self.bounds[f]) + (r if r < k else r + 1)

    def stats(self) -> dict[str, int]:
        """Items by pairing outcome, from the tables alone (no loading): paired with another
        field, paired within their field, unpaired (missing label / nothing to pair with)."""
        out = {"items": len(self), "paired_other_field": 0, "paired_same_field": 0,
               "unpaired_missing_label": 0, "unpaired_alone": 0}
        counts = np.diff(self.bounds)
        for f, key in enumerate(self.field_keys):
            n = int(counts[f])
            if key is None:
                out["unpaired_missing_label"] += n
            elif len(self.groups[key][0]) > 1:
                out["paired_other_field"] += n
            elif n > 1:
                out["paired_same_field"] += n
            else:
                out["unpaired_alone"] += n
        return out

    def __getitem__(self, index: int) -> Item:
        item = self.base[index]
        if not isinstance(item, dict):
            return item
        j = self.partner(index)
        other = self.base[j] if j is not None else None
        if isinstance(other, Skipped):
            log.debug("partner %s of item %d is a bad sample; item unpaired", other.id, index)
        if not isinstance(other, dict) or len(other["views"]) != len(item["views"]):
            return {**item, "meta": {**item["meta"], "partner_index": None}}
        views = list(item["views"])
        n_global = int(item.get("n_global", len(views)))
        swap = ([1] if n_global >= 2 else []) + list(range(n_global + 1, len(views), 2))
        for v in swap:
            views[v] = other["views"][v]
        meta = {**item["meta"], "partner_index": j, "partner_id": other["id"]}
        return {**item, "views": views, "meta": meta}
