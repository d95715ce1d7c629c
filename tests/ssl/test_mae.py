"""MAE: pure functions against naive references; masking determinism; training steps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import biofm
from biofm.core import ConfigError, PackedBatch
from biofm.ssl.mae import MAE, MAEConfig
from biofm.ssl.masking import channel_patch_mask, fourier_loss, mae_loss, mask_budget, patchify

VIT_KW: dict[str, Any] = {"depth": 1, "patch_size": 8, "embed_dim": 32, "num_heads": 2}
SMALL = MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2)


class _Views:
    """The attributes of a ViewBatch that MAE reads (view-major global views)."""

    def __init__(self, images: list[torch.Tensor], index: list[int] | None = None,
                 ids: list[list[int]] | None = None, n_global: int = 1) -> None:
        n = len(images)
        self.global_views = PackedBatch.from_images(
            images * n_global, None if ids is None else ids * n_global,
            [{"id": str(i), "view": v} for v in range(n_global) for i in range(n)])
        self.local_views = None
        self.n_global, self.n_local, self.batch_size = n_global, 0, n
        self.meta = [{"index": k} for k in index] if index is not None else [{} for _ in images]


def _images(counts: list[int], size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, size, size, generator=g) for c in counts]


def _smooth_images(counts: list[int], size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Sums of a few low-frequency waves: learnable structure for the overfit test."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for c in counts:
        f = torch.rand(c, 3, 2, generator=g) * 0.3
        ph = torch.rand(c, 3, generator=g) * 6.28
        waves = torch.sin(f[..., 0, None, None] * yy + f[..., 1, None, None] * xx
                          + ph[..., None, None])  # (C, 3, H, W)
        out.append(waves.sum(dim=1))
    return out


# ---------------------------------------------------------------------- pure functions
def test_patchify_matches_loop() -> None:
    planes = torch.randn(3, 16, 24)
    got = patchify(planes, 8)
    assert got.shape == (3, 6, 64)
    for j in range(3):
        for k in range(6):
            r, c = divmod(k, 3)
            want = planes[j, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].reshape(-1)
            assert torch.equal(got[j, k], want)


def _naive_mask(ch_noise: np.ndarray, pa_noise: np.ndarray, m: int, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    b, c = ch_noise.shape
    n = pa_noise.shape[1] // c
    keeps, masks = [], []
    for i in range(b):
        hidden_ch = set(np.argsort(ch_noise[i])[:m].tolist())
        cand = [t for t in range(c * n) if t // n not in hidden_ch]
        keep = sorted(sorted(cand, key=lambda t: pa_noise[i, t])[:k])
        keeps.append(keep)
        masks.append([t not in keep for t in range(c * n)])
    return np.array(keeps), np.array(masks)


@pytest.mark.parametrize("c", [1, 2, 3, 5])
def test_masking_matches_naive_and_hides_whole_channels(c: int) -> None:
    g = torch.Generator().manual_seed(c)
    b, n = 4, 16
    ch, pa = torch.rand(b, c, generator=g), torch.rand(b, c * n, generator=g)
    ids_keep, mask = channel_patch_mask(ch, pa, 0.75, 0.25)
    m, k = mask_budget(c, n, 0.75, 0.25)
    assert m == min(math.floor(0.25 * c), c - 1) and k == min(round(0.25 * c * n), (c - m) * n)
    want_keep, want_mask = _naive_mask(ch.numpy(), pa.numpy(), m, k)
    np.testing.assert_array_equal(ids_keep.numpy(), want_keep)
    np.testing.assert_array_equal(mask.numpy(), want_mask)
    assert ids_keep.shape == (b, k)  # same K for every image of the group
    assert (mask.sum(dim=1) == c * n - k).all()  # hidden fraction ~ mask_ratio
    per_channel = mask.reshape(b, c, n)
    whole = per_channel.all(dim=2)  # (B, C) channels hidden whole
    chosen = torch.zeros(b, c, dtype=torch.bool).scatter_(1, ch.argsort(1)[:, :m], True)
    assert whole[chosen].all()
    assert (~whole).any(dim=1).all()  # at least one channel keeps visible tokens


def test_mask_budget_edge_cases() -> None:
    assert mask_budget(1, 4, 0.75, 0.9) == (0, 1)
    assert mask_budget(2, 4, 0.0, 0.9) == (1, 4)  # capped: one channel stays visible
    assert mask_budget(3, 1, 0.99, 0.0) == (0, 1)  # K >= 1


def _naive_mse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    per_image = []
    for i in range(pred.shape[0]):
        errs = [((pred[i, t] - target[i, t]) ** 2).mean()
                for t in range(pred.shape[1]) if mask[i, t]]
        per_image.append(sum(errs) / len(errs))
    return float(np.mean(per_image))


def _dft2_mag(x: np.ndarray) -> np.ndarray:
    p = x.shape[0]
    w = np.exp(-2j * np.pi * np.outer(np.arange(p), np.arange(p)) / p)
    return np.abs(w @ x @ w.T)


def _naive_fourier(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, p: int) -> float:
    per_image = []
    for i in range(pred.shape[0]):
        vals = [np.abs(_dft2_mag(pred[i, t].reshape(p, p)) - _dft2_mag(target[i, t].reshape(p, p)))
                .mean() for t in range(pred.shape[1]) if mask[i, t]]
        per_image.append(sum(vals) / len(vals))
    return float(np.mean(per_image))


def test_losses_match_naive_reference() -> None:
    g = torch.Generator().manual_seed(0)
    b, n_tok, p = 3, 10, 4
    pred = torch.randn(b, n_tok, p * p, generator=g, dtype=torch.float64)
    target = torch.randn(b, n_tok, p * p, generator=g, dtype=torch.float64)
    mask = torch.rand(b, n_tok, generator=g) < 0.6
    mask[:, 0] = True  # every image hides something; images hide different counts
    args = (pred.numpy(), target.numpy(), mask.numpy())
    assert mae_loss(pred, target, mask).item() == pytest.approx(_naive_mse(*args), rel=1e-5)
    got = fourier_loss(pred, target, mask, p).item()
    assert got == pytest.approx(_naive_fourier(*args, p), rel=1e-5)
    assert fourier_loss(target, target, mask, p).item() == 0.0
    assert mae_loss(target, target, mask).item() == 0.0


def test_loss_of_split_batch_averages_to_global() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(4, 6, 16, generator=g), torch.randn(4, 6, 16, generator=g)
    mask = torch.rand(4, 6, generator=g) < 0.5
    mask[:, 0] = True
    halves = [mae_loss(pred[s], target[s], mask[s]) for s in (slice(0, 2), slice(2, 4))]
    assert mae_loss(pred, target, mask).item() == pytest.approx(float(sum(halves) / 2))


# ---------------------------------------------------------------------- objective
def test_noise_depends_on_seed_step_index_only() -> None:
    mae = MAE(biofm.create_model("biovit_tiny", **VIT_KW), SMALL, total_steps=10)
    ims = _images([1, 3, 2, 3])
    full = mae.noise(_Views(ims, index=[10, 11, 12, 13]), n=16)
    flipped = mae.noise(_Views(ims[::-1], index=[13, 12, 11, 10]), n=16)
    half = mae.noise(_Views(ims[2:], index=[12, 13]), n=16)
    for a, b in zip(full, flipped[::-1], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full[2:], half, strict=True):
        assert torch.equal(a, b)
    assert [len(z) for z in full] == [c * 17 for c in (1, 3, 2, 3)]
    mae.on_step_end()
    assert not torch.equal(mae.noise(_Views(ims, index=[10, 11, 12, 13]), n=16)[0], full[0])


def test_noise_per_view_and_without_index() -> None:
    mae = MAE(biofm.create_model("biovit_tiny", **VIT_KW), SMALL, total_steps=10)
    ims = _images([2, 3])
    two = mae.noise(_Views(ims, index=[4, 5], n_global=2), n=16)
    assert torch.equal(two[0], mae.noise(_Views(ims, index=[4, 5]), n=16)[0])
    assert not torch.equal(two[0], two[2])  # view 1 of sample 0 gets its own mask
    torch.manual_seed(0)
    a = mae.noise(_Views(ims), n=16)  # no dataset index: the global torch RNG
    torch.manual_seed(0)
    assert all(torch.equal(x, y) for x, y in zip(a, mae.noise(_Views(ims), n=16), strict=True))


@pytest.mark.parametrize(("name", "kw"), [("biovit_tiny", {}),
                                          ("boc_vit_tiny", {"fusion": "mean"})])
def test_unmasked_encoder_path_equals_backbone(name: str, kw: dict[str, Any]) -> None:
    torch.manual_seed(0)
    backbone = biofm.create_model(name, **VIT_KW, **kw).eval()
    cfg = MAEConfig(mask_ratio=0.0, channel_mask_ratio=0.0, decoder_dim=16, decoder_heads=2)
    mae = MAE(backbone, cfg, total_steps=1)
    counts = [2, 1, 3, 2]
    views = _Views(_images(counts), index=[0, 1, 2, 3])
    out = mae(views)
    assert out["mask_ratio"] == 0.0
    with torch.no_grad():
        patches = backbone.forward_tokens(views.global_views).patches  # (P, N, D)
    want = torch.stack([x.mean(dim=(0, 1)) for x in patches.split(counts)])
    torch.testing.assert_close(out["features"], want, rtol=1e-4, atol=1e-5)


def test_loss_independent_of_batch_order_and_split() -> None:
    torch.manual_seed(0)
    mae = MAE(biofm.create_model("biovit_tiny", **VIT_KW), SMALL, total_steps=10).eval()
    ims, idx = _images([3, 1, 2, 3]), [7, 8, 9, 10]
    with torch.no_grad():
        full = mae(_Views(ims, index=idx))["loss"].item()
        flipped = mae(_Views(ims[::-1], index=idx[::-1]))["loss"].item()
        halves = [mae(_Views(ims[s], index=idx[s]))["loss"].item()
                  for s in (slice(0, 2), slice(2, 4))]
    assert flipped == pytest.approx(full, rel=1e-5)
    assert sum(halves) / 2 == pytest.approx(full, rel=1e-5)


def _grad_check(backbone: torch.nn.Module, ids: list[list[int]] | None = None) -> None:
    counts = [1, 2, 3, 5, 3]
    mae = MAE(backbone, SMALL, total_steps=10)
    out = mae(_Views(_images(counts), index=list(range(5)), ids=ids))
    assert torch.isfinite(out["loss"]) and out["features"].shape == (5, 32)
    assert not out["features"].requires_grad
    assert 0.5 < out["mask_ratio"] < 0.9 and out["loss_fourier"] > 0
    out["loss"].backward()
    missing = [n for n, p in mae.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_mixed_channel_counts_biovit_grads_everywhere() -> None:
    torch.manual_seed(0)
    ids = [[1 + (k % 5) for k in range(c)] for c in [1, 2, 3, 5, 3]]
    _grad_check(biofm.create_model("biovit_tiny", **VIT_KW), ids)
    _grad_check(biofm.create_model("biovit_tiny", channel_identity="position", **VIT_KW))


def test_mixed_channel_counts_boc_vit_grads_everywhere() -> None:
    torch.manual_seed(0)
    _grad_check(biofm.create_model("boc_vit_tiny", fusion="mean", **VIT_KW))


def test_overfits_one_batch() -> None:
    """One fixed batch with a fixed mask (the step is not advanced): the loss must fall."""
    torch.manual_seed(0)
    cfg = MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2)
    mae = MAE(biofm.create_model("biovit_tiny", **VIT_KW), cfg, total_steps=30)
    counts = [1, 2, 3, 2]
    ids = [[1 + k for k in range(c)] for c in counts]
    views = _Views(_smooth_images(counts), index=[0, 1, 2, 3], ids=ids)
    opt = torch.optim.Adam(mae.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = mae(views)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])


def test_unsupported_backbones_and_configs_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="dino or simclr"):
        MAE(biofm.create_model("bioresnet18"), SMALL, total_steps=1)
    with pytest.raises(ConfigError, match="grouped"):
        MAE(biofm.create_model("biovit_tiny", attn_impl="flex", **VIT_KW), SMALL, 1)
    with pytest.raises(ConfigError, match="fusion='mean'"):
        MAE(biofm.create_model("boc_vit_tiny", **VIT_KW), SMALL, 1)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="decoder_depth"):
        MAEConfig(decoder_depth=0)
    with pytest.raises(ConfigError, match="decoder_heads"):
        MAEConfig(decoder_dim=12, decoder_heads=8)
