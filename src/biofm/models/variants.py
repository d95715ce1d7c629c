"""Registered model variants. Names follow ``family_size[_pPATCH]``; patch 16 is the default."""

from __future__ import annotations

from typing import Any

from biofm.models.biovit import BioViT
from biofm.models.registry import register_model

_SIZES = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


def _biovit(size: str, patch: int, kw: dict[str, Any]) -> BioViT:
    return BioViT(**{**_SIZES[size], "patch_size": patch, **kw})


@register_model
def biovit_tiny(**kw: Any) -> BioViT:
    """BioViT-Tiny/16: 192-d, 12 blocks, 3 heads (~5.5 M parameters)."""
    return _biovit("tiny", 16, kw)


@register_model
def biovit_tiny_p8(**kw: Any) -> BioViT:
    """BioViT-Tiny/8: finer patches, 4x the tokens per channel."""
    return _biovit("tiny", 8, kw)


@register_model
def biovit_small(**kw: Any) -> BioViT:
    """BioViT-Small/16: 384-d, 12 blocks, 6 heads (~21 M parameters)."""
    return _biovit("small", 16, kw)


@register_model
def biovit_small_p8(**kw: Any) -> BioViT:
    """BioViT-Small/8."""
    return _biovit("small", 8, kw)


@register_model
def biovit_base(**kw: Any) -> BioViT:
    """BioViT-Base/16: 768-d, 12 blocks, 12 heads (~86 M parameters)."""
    return _biovit("base", 16, kw)


@register_model
def biovit_base_p8(**kw: Any) -> BioViT:
    """BioViT-Base/8."""
    return _biovit("base", 8, kw)
