"""BioResNet: a channel-agnostic ResNet that fuses any number of channels early, pad-free.

Design, in three parts:

1. **Shared per-channel stem.** Every (image, channel) plane goes alone, as a 1-channel image,
   through the same stem (7x7 stride-2 conv, norm, ReLU, 3x3 stride-2 max pool) to
   ``(P, S, H/4, W/4)``. With ``channel_identity="vocab"`` a learned per-stain vector is added
   to each plane's features, so the model knows which stain a plane shows (id 0 = unknown).
2. **Order- and count-invariant fusion.** Per pixel, an image's planes are merged by symmetric
   segment operations over ``batch.image_index`` (no padding, no Python loop over images): an
   attention-weighted sum (softmax over the image's planes of a 1x1-conv score), the mean and
   the max, projected back to ``S`` channels by a 1x1 conv. The result is ``(B, S, H/4, W/4)``
   whatever the channel count or order.
3. **ResNet trunk** (basic or bottleneck blocks, 4 stages, ResNet-D average-pool shortcuts),
   then global average pooling and a LayerNorm: ``(B, D)``.

GroupNorm is the default so an image's embedding never depends on its batch mates, in train
mode too (a batch of one image at 32 px works). Any image side >= 32 (the total stride) works,
odd sizes included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.models.base import Encoder, TokenOutput
from biofm.models.registry import register_model
from biofm.nn.embed import trunc_normal_
from biofm.nn.layers import DropPath
from biofm.nn.segment import segment_max, segment_sum

BLOCK_TYPES = ("basic", "bottleneck")
CHANNEL_IDENTITY_MODES = ("vocab", "none")
FUSION_MODES = ("attention", "meanmax")
NORM_TYPES = ("group", "batch")


@dataclass(frozen=True)
class BioResNetConfig:
    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    stem_width: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    channel_identity: str = "vocab"
    vocab_size: int = len(DEFAULT_VOCAB)
    fusion: str = "attention"
    drop_path: float = 0.0
    channels_last: bool = True
    norm: str = "group"  # "group": batch-independent; "batch": faster on GPU, needs batch > 1
    max_groups: int = 32  # GroupNorm groups: the largest divisor of the width up to this


def _num_groups(width: int, max_groups: int) -> int:
    """Largest divisor of ``width`` <= max_groups that keeps 2+ channels per group if it can."""
    limit = max(1, min(max_groups, width // 2))
    return next(g for g in range(limit, 0, -1) if width % g == 0)


class _Norm:
    """Builds the configured 2-D norm layer for a width."""

    def __init__(self, kind: str, max_groups: int) -> None:
        self.kind = kind
        self.max_groups = max_groups

    def __call__(self, width: int) -> nn.GroupNorm | nn.BatchNorm2d:
        if self.kind == "batch":
            return nn.BatchNorm2d(width)
        return nn.GroupNorm(_num_groups(width, self.max_groups), width)


def _shortcut(c_in: int, c_out: int, stride: int, norm: _Norm) -> nn.Module:
    """Identity, or (ResNet-D) average pool then 1x1 conv + norm when the shape changes."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    layers: list[nn.Module] = []
    if stride > 1:
        # ceil_mode keeps the shortcut's size equal to the 3x3 stride-2 branch for odd sides
        layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
    layers += [nn.Conv2d(c_in, c_out, 1, bias=False), norm(c_out)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, norm: _Norm,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.norm1 = norm(width)
        self.conv2 = nn.Conv2d(width, c_out, 3, 1, 1, bias=False)
        self.norm2 = norm(c_out)
        self.shortcut = _shortcut(c_in, c_out, stride, norm)
        self.drop_path = DropPath(drop_path)

    def zero_init_last(self) -> None:
        """Start as the identity: zero scale on the residual branch's last norm."""
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = self.norm2(self.conv2(y))
        return F.relu(self.shortcut(x) + self.drop_path(y), inplace=True)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, residual (ResNet-50/101)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, norm: _Norm,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.norm1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.norm2 = norm(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.norm3 = norm(c_out)
        self.shortcut = _shortcut(c_in, c_out, stride, norm)
        self.drop_path = DropPath(drop_path)

    def zero_init_last(self) -> None:
        """Start as the identity: zero scale on the residual branch's last norm."""
        nn.init.zeros_(self.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = F.relu(self.norm2(self.conv2(y)), inplace=True)
        y = self.norm3(self.conv3(y))
        return F.relu(self.shortcut(x) + self.drop_path(y), inplace=True)


class PlaneStem(nn.Module):
    """Shared per-plane stem: (P, H, W) -> (P, S, ceil(H/4), ceil(W/4)).

    A single 7x7 stride-2 conv rather than a stack of 3x3 convs: the stem runs once per
    *channel*, so its cost scales with the channel count. With one input channel the 7x7 conv
    costs 49*S multiply-adds per output pixel, while a deep stem's second 3x3 conv (S/2 -> S)
    would cost ~4.5*S^2 at the same resolution, i.e. the trunk's cost again for every channel.
    """

    def __init__(self, width: int, norm: _Norm, channels_last: bool = True) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv = nn.Conv2d(1, width, 7, 2, 3, bias=False)
        self.norm = norm(width)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        x = self.conv(planes.unsqueeze(1))  # (P, 1, H, W) -> (P, S, H/2, W/2)
        if self.channels_last:
            # a 1-channel input leaves the conv output NCHW; the norm and the max pool (the
            # stem's costliest op on CPU) run ~2x faster channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        # ReLU after the pool: they commute (ReLU is monotone) and the pooled map is 4x smaller
        return F.relu(self.pool(self.norm(x)), inplace=True)


class ChannelFusion(nn.Module):
    """Merges each image's planes into one feature map, invariant to their order and count.

    ``attention``: per pixel, softmax over the image's planes of a 1x1-conv score (zero-init, so
    it starts as the mean) weights a sum; it is concatenated with the mean and the max over the
    planes. ``meanmax``: mean and max only. A 1x1 conv + norm + ReLU maps back to ``dim``.
    Segment reductions over ``image_index`` (``index_add``, ``scatter_reduce``) handle mixed
    channel counts without padding and without a loop over images.
    """

    def __init__(self, dim: int, mode: str, norm: _Norm, channels_last: bool) -> None:
        super().__init__()
        self.mode = mode
        self.channels_last = channels_last
        self.score = nn.Conv2d(dim, 1, 1) if mode == "attention" else None
        n_in = dim * (3 if mode == "attention" else 2)
        self.proj = nn.Conv2d(n_in, dim, 1, bias=False)
        self.norm = norm(dim)

    def forward(self, x: torch.Tensor, image_index: torch.Tensor,
                counts: torch.Tensor) -> torch.Tensor:
        """``x`` (P, S, h, w) plane features -> (B, S, h, w) image features."""
        fused = torch.cat(self.pool(x, image_index, counts), dim=1)
        if self.channels_last:
            fused = fused.contiguous(memory_format=torch.channels_last)
        return F.relu(self.norm(self.proj(fused)), inplace=True)

    def pool(self, x: torch.Tensor, image_index: torch.Tensor,
             counts: torch.Tensor) -> list[torch.Tensor]:
        """The per-image symmetric poolings, each (B, S, h, w): [attention,] mean, max."""
        b = counts.numel()
        # Index ops along dim 0 are fast only on a contiguous tensor (on CPU ~30x slower on a
        # channels-last one), so a channels-last x is reduced in its (P, h, w, S) "rows" view
        # (the same memory) and the results are viewed back as channels-last (B, S, h, w).
        cl = self.channels_last

        def rows(t: torch.Tensor) -> torch.Tensor:
            return (t.permute(0, 2, 3, 1) if cl else t).contiguous()

        def unrows(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 3, 1, 2) if cl else t

        def seg_max(t: torch.Tensor) -> torch.Tensor:
            return segment_max(t, image_index, b)

        def seg_sum(t: torch.Tensor) -> torch.Tensor:
            return segment_sum(t, image_index, b)

        xr = rows(x)
        mean = seg_sum(xr) / counts.view(-1, 1, 1, 1).to(x.dtype)
        parts = [unrows(mean), unrows(seg_max(xr))]
        if self.score is not None:
            s = rows(self.score(x).float())  # (P, 1, h, w) or (P, h, w, 1)
            with torch.no_grad():  # the shift is for stability only; softmax ignores it
                smax = seg_max(s)
            e = torch.exp(s - smax[image_index])
            w = (e / seg_sum(e)[image_index]).to(x.dtype)
            parts.insert(0, unrows(seg_sum(w * xr)))
        return parts


class BioResNet(Encoder):
    """Channel-agnostic ResNet encoder (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        cfg = _make_config(kwargs)
        self.cfg = cfg
        block_cls: type[BasicBlock] | type[Bottleneck] = (
            BasicBlock if cfg.block == "basic" else Bottleneck
        )
        norm = _Norm(cfg.norm, cfg.max_groups)
        n_stages = len(cfg.layers)
        self.embed_dim = cfg.widths[-1] * block_cls.expansion
        self.stage_dims = [w * block_cls.expansion for w in cfg.widths]
        self.min_size = 4 * 2 ** (n_stages - 1)  # total stride: any side from here on works
        self.size_multiple = 1
        self.uses_channel_ids = cfg.channel_identity == "vocab"
        self.vocab_size = cfg.vocab_size

        self.stem = PlaneStem(cfg.stem_width, norm, cfg.channels_last)
        self.channel_embed = (
            nn.Embedding(cfg.vocab_size, cfg.stem_width) if self.uses_channel_ids else None
        )
        self.fusion = ChannelFusion(cfg.stem_width, cfg.fusion, norm, cfg.channels_last)
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.layers)).tolist()
        stages: list[nn.Module] = []
        c_in, k = cfg.stem_width, 0
        for i, (depth, width) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(c_in, width, stride, norm, rates[k]))
                c_in, k = width * block_cls.expansion, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-6)
        self._init_weights()
        if cfg.channels_last:
            for p in self.parameters():
                if p.ndim == 4:  # conv weights
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm | nn.BatchNorm2d | nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                m.zero_init_last()  # each residual block starts as the identity
        if self.fusion.score is not None:
            # uniform attention at init: the weighted sum starts as the mean
            nn.init.zeros_(self.fusion.score.weight)
        if self.channel_embed is not None:
            trunc_normal_(self.channel_embed.weight, std=0.02)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    @property
    def num_blocks(self) -> int:
        """Number of stages (what ``forward_intermediates`` indexes)."""
        return len(self.stages)

    def compiled_regions(self) -> list[nn.Module]:
        return list(self.stages)

    # ------------------------------------------------------------------ computation
    def fuse(self, batch: PackedBatch) -> torch.Tensor:
        """Stem every plane, add its stain identity, fuse per image: (B, S, H/4, W/4)."""
        self.check_batch(batch)
        x = self.stem(batch.planes)  # (P, S, h, w)
        if self.channel_embed is not None:
            x = x + self.channel_embed(batch.channel_ids).to(x.dtype)[:, :, None, None]
        return self.fusion(x, batch.image_index, batch.counts)

    def _run(self, batch: PackedBatch,
             collect: Sequence[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Last-stage feature map (B, D, h, w) and GAP features of the stages in ``collect``."""
        x = self.fuse(batch)
        inter: dict[int, torch.Tensor] = {}
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in collect:
                pooled = x.mean(dim=(2, 3))
                inter[i] = self.norm(pooled) if i == last else pooled
        return x, inter

    # ------------------------------------------------------------------ contract
    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """(B, D) image embeddings: global average pool of the last stage, then LayerNorm."""
        x, _ = self._run(batch)
        return self.norm(x.mean(dim=(2, 3)))

    def forward_tokens(self, batch: PackedBatch) -> TokenOutput:
        """CLS = the embedding; patches = last-stage map as (B, h*w, D) tokens, each normed."""
        x, _ = self._run(batch)
        h, w = int(x.shape[2]), int(x.shape[3])
        cls = self.norm(x.mean(dim=(2, 3)))
        patches = self.norm(x.flatten(2).transpose(1, 2))
        return TokenOutput(cls=cls, patches=patches, grid=(h, w), per_plane=False)

    def forward_intermediates(
        self, batch: PackedBatch, blocks: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """{stage: (B, stage width)} globally pooled stage outputs; the last stage also gets
        the final LayerNorm, so it equals ``forward``."""
        idx = self.resolve_blocks(blocks)
        return self._run(batch, collect=idx)[1]


def _make_config(kwargs: dict[str, Any]) -> BioResNetConfig:
    """Validated config; lists (from JSON/YAML) become tuples; errors name the fix."""
    known = {f.name for f in fields(BioResNetConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise BadInputError(f"BioResNet has no option(s) {', '.join(unknown)}",
                            f"use only {', '.join(sorted(known))}")
    kw = dict(kwargs)
    for key in ("layers", "widths"):
        if key in kw:
            kw[key] = tuple(int(v) for v in kw[key])
    cfg = BioResNetConfig(**kw)
    choices = {"block": BLOCK_TYPES, "channel_identity": CHANNEL_IDENTITY_MODES,
               "fusion": FUSION_MODES, "norm": NORM_TYPES}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise BadInputError(f"{key}={getattr(cfg, key)!r} is not supported",
                                f"use one of {allowed}")
    if len(cfg.layers) != len(cfg.widths) or not cfg.layers:
        raise BadInputError(
            f"layers {cfg.layers} and widths {cfg.widths} must have one entry per stage",
            "give as many widths as stages, e.g. layers=(2, 2, 2, 2), widths=(64, 128, 256, 512)",
        )
    if min(cfg.layers) < 1 or min(cfg.widths) < 1 or cfg.stem_width < 1:
        raise BadInputError("every stage needs >= 1 block and every width must be >= 1",
                            "use positive layers, widths and stem_width")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise BadInputError(f"drop_path={cfg.drop_path} is outside [0, 1)",
                            "use a stochastic-depth rate such as 0.05")
    return cfg


@register_model
def bioresnet18(**kw: Any) -> BioResNet:
    """BioResNet-18: basic blocks (2, 2, 2, 2), 512-d (11.19 M parameters)."""
    return BioResNet(**{"block": "basic", "layers": (2, 2, 2, 2), **kw})


@register_model
def bioresnet50(**kw: Any) -> BioResNet:
    """BioResNet-50: bottleneck blocks (3, 4, 6, 3), 2048-d (23.52 M parameters)."""
    return BioResNet(**{"block": "bottleneck", "layers": (3, 4, 6, 3), **kw})
