"""Core contracts shared by every layer: Sample, PackedBatch, ChannelVocab, errors."""

from biofm.core.batch import PackedBatch
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
