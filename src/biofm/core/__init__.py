"""Core contracts shared by every layer: Sample, PackedBatch, ChannelVocab, errors.

``PackedBatch`` (torch) loads on first use, so torch-free layers (io, eval) stay torch-free.
"""

from typing import Any

from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import (
    BadInputError,
    BadSampleError,
    BiofmError,
    ConfigError,
    MissingExtraError,
    UnsupportedFormatError,
)
from biofm.core.sample import UNKNOWN_CHANNEL, Sample

__all__ = [
    "DEFAULT_VOCAB",
    "UNKNOWN_CHANNEL",
    "BadInputError",
    "BadSampleError",
    "BiofmError",
    "ChannelVocab",
    "ConfigError",
    "MissingExtraError",
    "PackedBatch",
    "Sample",
    "UnsupportedFormatError",
]


def __getattr__(name: str) -> Any:
    if name == "PackedBatch":
        from biofm.core.batch import PackedBatch

        return PackedBatch
    raise AttributeError(f"module 'biofm.core' has no attribute {name!r}")
