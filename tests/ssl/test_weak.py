"""Weak supervision: label codes, column checks, same-plate negatives, one SupCon step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import biofm
from biofm.core import PackedBatch
from biofm.core.errors import ConfigError
from biofm.ssl.simclr import supcon_loss
from biofm.ssl.weak import SupCon, WeakConfig, check_weak_columns, label_codes


def test_label_codes_are_stable_and_missing_values_are_unique() -> None:
    meta: list[dict[str, Any]] = [
        {"t": "DMSO", "index": 0}, {"t": "DMSO", "index": 5}, {"t": 3, "index": 1},
        {"t": 3.0, "index": 2}, {"t": None, "index": 7}, {"t": float("nan"), "index": 8},
        {"t": "  ", "index": 9}, {"index": 10},
    ]
    codes = label_codes(meta, "t").tolist()
    assert codes[0] == codes[1] == 679830408634492541  # the same in every process
    assert codes[2] == codes[3] and codes[2] != codes[0] and codes[2] >= 0
    assert codes[4:] == [-8, -9, -10, -11]  # -(index + 1): the same on every rank
    no_index = label_codes([{"t": None}, {"t": None}], "t").tolist()
    assert no_index[0] != no_index[1] and max(no_index) < 0


def test_missing_column_names_it() -> None:
    with pytest.raises(ConfigError, match=r"'compound'.*plate"):
        label_codes([{"plate": "p1"}], "compound")
    cols = ["id", "plate", "treatment"]
    check_weak_columns(cols, WeakConfig())
    with pytest.raises(ConfigError, match=r"weak\.label='gene'.*treatment"):
        check_weak_columns(cols, WeakConfig(label="gene"))
    with pytest.raises(ConfigError, match="same_plate_negatives=false"):
        check_weak_columns(["treatment"], WeakConfig())
    check_weak_columns(["treatment"], WeakConfig(same_plate_negatives=False))


def test_same_plate_negatives_ignore_how_far_apart_plates_are() -> None:
    # labels a, b on plate 0 and c, d on plate 1 (no label on both plates), 2 views each
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(8, 4, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    plates = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    same_plate = plates[:, None] == plates[None, :]
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    moved = z.clone()
    moved[plates == 1] = z[plates == 1] @ q  # plate 1 rotated: only cross-plate sims change
    before = supcon_loss(z, labels, 0.1, neg_mask=same_plate)
    after = supcon_loss(moved, labels, 0.1, neg_mask=same_plate)
    assert abs(before.item() - after.item()) < 1e-10
    assert abs(supcon_loss(z, labels, 0.1).item() - supcon_loss(moved, labels, 0.1).item()) > 1e-3


class _Views:
    def __init__(self, meta: list[dict[str, Any]]) -> None:
        g = torch.Generator().manual_seed(0)
        ims = [torch.randn(1 + i % 3, 32, 32, generator=g) for i in range(len(meta))]
        self.global_views = PackedBatch.from_images(ims + ims[::-1])
        self.local_views = None
        self.n_global, self.n_local, self.batch_size = 2, 0, len(meta)
        self.meta = meta


META = [{"index": i, "treatment": t, "plate": p}
        for i, (t, p) in enumerate([("a", "p1"), ("b", "p1"), ("a", "p2"), ("c", "p2"),
                                    (None, "p1")])]


def _supcon(**kw: Any) -> SupCon:
    torch.manual_seed(0)
    backbone = biofm.create_model("biovit_tiny", depth=1, patch_size=8, embed_dim=32,
                                  num_heads=2)
    return SupCon(backbone, WeakConfig(proj_hidden_dim=16, proj_dim=8, **kw), total_steps=1)


def test_supcon_step_trains_and_logs() -> None:
    obj = _supcon()
    out = obj(_Views(META))
    assert torch.isfinite(out["loss"]) and out["features"].shape == (5, 32)
    assert 0 < out["frac_anchors_with_negatives"] <= 1
    assert -1 <= out["neg_sim"] <= 1 and -1 <= out["pos_sim"] <= 1
    out["loss"].backward()
    grads = [p.grad for p in obj.backbone.parameters() if p.requires_grad]
    assert all(gr is not None for gr in grads) and any(gr.abs().sum() > 0 for gr in grads
                                                       if gr is not None)
    everywhere = _supcon(same_plate_negatives=False)(_Views(META))
    assert everywhere["frac_anchors_with_negatives"] == 1.0
    assert abs(everywhere["loss"].item() - out["loss"].item()) > 1e-4


def test_supcon_missing_label_column_is_a_config_error() -> None:
    obj = _supcon(label="compound")
    with pytest.raises(ConfigError, match="compound"):
        obj(_Views(META))


def test_instance_term_mixes_in_with_its_weight() -> None:
    """loss = (1 - w) * label term + w * instance term (views of one sample as positives)."""
    views = _Views(META)
    label_only = _supcon(instance_weight=0.0)(views)
    instance_only = _supcon(instance_weight=1.0)(views)
    half = _supcon(instance_weight=0.5)(views)
    assert label_only["loss_instance"] == 0.0
    assert abs(instance_only["loss"].item() - instance_only["loss_instance"]) < 1e-6
    want = 0.5 * label_only["loss_label"] + 0.5 * instance_only["loss_instance"]
    assert abs(half["loss"].item() - want) < 1e-5
    with pytest.raises(ConfigError, match="instance_weight"):
        WeakConfig(instance_weight=1.5)
