"""biofm: channel-agnostic pretrained encoders for microscopy images.

Importing the package is cheap: submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from biofm._version import __version__

__all__ = ["__version__", "create_model", "list_models", "load_model"]

_LAZY = {"create_model": "biofm.models", "list_models": "biofm.models",
         "load_model": "biofm.release"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biofm' has no attribute {name!r}")
