from __future__ import annotations

from typing import Any

import pytest
import torch

from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError, BiofmError
from biofm.data.badsamples import BadSampleCounter, check_bad_fraction
from biofm.data.collate import Skipped, collate_images, collate_views

NAMES = ["DNA", "ER", "RNA", "AGP", "Mito", "brightfield", "x1", "x2", "x3", "x4"]


def item(i: int, c: int, n_global: int = 2, n_local: int = 3) -> dict[str, Any]:
    """Views of sample i with c channels; view v's planes hold 100 * i + v."""
    views = []
    for v in range(n_global + n_local):
        size = 16 if v < n_global else 8
        views.append((torch.full((c, size, size), 100.0 * i + v), NAMES[:c]))
    return {"views": views, "id": f"s{i}", "meta": {"well": i}, "n_global": n_global}


def test_mixed_channel_counts_view_major() -> None:
    counts = list(range(1, 11))
    batch = collate_views([item(i, c) for i, c in enumerate(counts)])
    b = len(counts)
    assert (batch.batch_size, batch.n_global, batch.n_local, batch.n_skipped) == (b, 2, 3, 0)
    g, loc = batch.global_views, batch.local_views
    assert g is not None and loc is not None
    assert g.num_images == 2 * b and loc.num_images == 3 * b
    assert g.counts.tolist() == counts * 2
    assert g.offsets.tolist() == [0, *torch.cumsum(torch.tensor(counts * 2), 0).tolist()]
    assert g.image_size == (16, 16) and loc.image_size == (8, 8)
    for j, img in enumerate(g.images()):
        v, i = divmod(j, b)
        assert torch.all(img == 100 * i + v)
        assert g.meta[j] == {"id": f"s{i}", "view": v}
    for j, img in enumerate(loc.images()):
        v, i = divmod(j, b)
        assert torch.all(img == 100 * i + 2 + v)
    off = g.offsets.tolist()
    assert g.channel_ids[off[2]:off[3]].tolist() == DEFAULT_VOCAB.ids(NAMES[:3])
    assert g.channel_ids[off[b + 9]:off[b + 10]].tolist() == DEFAULT_VOCAB.ids(NAMES)
    assert batch.ids == [f"s{i}" for i in range(b)] and batch.meta[3] == {"well": 3}


def test_skipped_items_are_counted() -> None:
    batch = collate_views([item(0, 2), None, Skipped("bad-1", "OSError"), item(1, 4)])
    assert batch.batch_size == 2 and batch.n_skipped == 2 and batch.skipped_ids == ["bad-1"]
    assert batch.global_views is not None and batch.global_views.counts.tolist() == [2, 4, 2, 4]
    empty = collate_views([None, Skipped("bad-2")])
    assert empty.is_empty and empty.global_views is None and empty.n_skipped == 2


def test_no_locals_and_inconsistent_views() -> None:
    batch = collate_views([item(0, 3, n_local=0), item(1, 1, n_local=0)])
    assert batch.local_views is None and batch.n_local == 0
    with pytest.raises(BadInputError, match="same number of views"):
        collate_views([item(0, 3), item(1, 3, n_local=1)])


def test_collate_images_for_embedding() -> None:
    items = [item(0, 3, n_global=1, n_local=0), None, item(1, 5, n_global=1, n_local=0)]
    pb = collate_images(items)
    assert pb is not None and pb.counts.tolist() == [3, 5]
    assert pb.meta[1] == {"well": 1, "id": "s1", "view": 0}
    assert collate_images([None]) is None


def test_bad_fraction_check() -> None:
    counter = BadSampleCounter()
    counter.update(collate_views([item(0, 2), Skipped("bad-1"), None, item(1, 1)]))
    assert (counter.seen, counter.bad, counter.ids) == (4, 2, ["bad-1"])
    check_bad_fraction(counter, 0.1)  # too few samples seen to judge
    with pytest.raises(BiofmError, match=r"2 of 4 samples .*bad-1.*Fix"):
        check_bad_fraction(counter, 0.1, min_seen=0)
    counter.add(96, 0)
    check_bad_fraction(counter, 0.1)  # 2 %: within the limit
    counter.add(10, 10, [f"b{i}" for i in range(10)])
    with pytest.raises(BiofmError, match="above the allowed fraction"):
        check_bad_fraction(counter, 0.1)
