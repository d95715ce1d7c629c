"""Collate dataset items into packed batches (variable channel counts, no padding).

``collate_views`` builds a ``ViewBatch`` for self-supervised training; ``collate_images`` packs
single views (or tiles) for embedding. Items that are ``None`` or ``Skipped`` (bad samples) are
counted, not packed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadInputError


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns for a sample it cannot use: its id and the reason."""

    id: str
    reason: str = ""


Item = dict[str, Any] | Skipped | None


@dataclass
class ViewBatch:
    """Multi-crop views of ``batch_size`` images, packed view-major.

    ``global_views`` holds ``n_global * batch_size`` images: image ``v * batch_size + i`` is
    global view ``v`` of sample ``i`` (likewise ``local_views``, None when ``n_local == 0``).
    ``global_views`` is None only when every item of the batch was skipped (``is_empty``).
    """

    global_views: PackedBatch | None
    local_views: PackedBatch | None
    n_global: int
    n_local: int
    batch_size: int
    n_skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.batch_size == 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ViewBatch:
        g = self.global_views.to(device, non_blocking) if self.global_views else None
        lv = self.local_views.to(device, non_blocking) if self.local_views else None
        return ViewBatch(g, lv, self.n_global, self.n_local, self.batch_size, self.n_skipped,
                         self.skipped_ids, self.ids, self.meta)

    def pin_memory(self) -> ViewBatch:
        g = self.global_views.pin_memory() if self.global_views else None
        lv = self.local_views.pin_memory() if self.local_views else None
        return ViewBatch(g, lv, self.n_global, self.n_local, self.batch_size, self.n_skipped,
                         self.skipped_ids, self.ids, self.meta)


def split_skipped(items: Sequence[Item]) -> tuple[list[dict[str, Any]], list[str], int]:
    """(usable items, ids of skipped items that carry one, number skipped)."""
    good = [it for it in items if isinstance(it, dict)]
    skipped_ids = [it.id for it in items if isinstance(it, Skipped)]
    return good, skipped_ids, len(items) - len(good)


def _pack(
    views: list[tuple[torch.Tensor, list[str]]], meta: list[dict[str, Any]], vocab: ChannelVocab,
    fix: str = "give every global view one size and every local view one size",
) -> PackedBatch:
    try:
        return PackedBatch.from_images(
            [v for v, _ in views], [vocab.ids(n) for _, n in views], meta
        )
    except BadInputError as err:
        raise BadInputError(
            f"views to pack together differ in shape: {err.problem}", fix
        ) from err


def collate_views(
    items: Sequence[Item], n_global: int | None = None, vocab: ChannelVocab = DEFAULT_VOCAB
) -> ViewBatch:
    """Dataset items (dicts with ``views``, ``id``, ``meta``, ``n_global``) -> ViewBatch.

    ``n_global`` defaults to each item's ``n_global`` entry (as set by the dataset from its
    transform), else all views are global. Channel names become ids with ``vocab.ids``.
    """
    good, skipped_ids, n_skipped = split_skipped(items)
    if not good:
        ng = n_global or 0
        return ViewBatch(None, None, ng, 0, 0, n_skipped, skipped_ids)
    n_views = len(good[0]["views"])
    ng = int(n_global if n_global is not None else good[0].get("n_global", n_views))
    if any(len(it["views"]) != n_views for it in good) or not 1 <= ng <= n_views:
        raise BadInputError(
            f"items have {sorted({len(it['views']) for it in good})} views with n_global={ng}",
            "use one multi-crop transform for the whole dataset (same number of views per item)",
        )
    b = len(good)
    ids = [str(it.get("id", "")) for it in good]
    order = [(v, i) for v in range(n_views) for i in range(b)]  # view-major
    views = [good[i]["views"][v] for v, i in order]
    meta = [{"id": ids[i], "view": v} for v, i in order]
    glob = _pack(views[: ng * b], meta[: ng * b], vocab)
    loc = _pack(views[ng * b:], meta[ng * b:], vocab) if n_views > ng else None
    return ViewBatch(glob, loc, ng, n_views - ng, b, n_skipped, skipped_ids, ids,
                     [dict(it.get("meta", {})) for it in good])


def collate_images(
    items: Sequence[Item], vocab: ChannelVocab = DEFAULT_VOCAB
) -> PackedBatch | None:
    """Pack every view (e.g. every tile) of every usable item, item-major, for embedding.

    Each image's meta is the item's meta plus ``id`` and ``view`` (its view/tile index), so
    the caller can pool tile embeddings per id. Returns None when every item was skipped;
    ids of skipped items are then missing from the output, which the caller can report.
    """
    good, _, _ = split_skipped(items)
    if not good:
        return None
    views: list[tuple[torch.Tensor, list[str]]] = []
    meta: list[dict[str, Any]] = []
    for it in good:
        for k, view in enumerate(it["views"]):
            views.append(view)
            meta.append({**it.get("meta", {}), "id": str(it.get("id", "")), "view": k})
    return _pack(views, meta, vocab, "give every image one size (a crop_size, SingleView(size) "
                 "or TileViews) before collating")
