"""Model registry: each variant is a small registered function; ``create_model`` builds one."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from biofm.core.errors import BadInputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered model names containing ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if pattern in n)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` override the variant's defaults.

    The returned module remembers ``model_name`` and ``model_kwargs`` so it can be rebuilt
    from a checkpoint or weights card.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else ""
        raise BadInputError(
            f"unknown model {name!r} {hint}".strip(),
            f"choose one of biofm.list_models(): {', '.join(list_models())}",
        )
    model = _REGISTRY[name](**kwargs)
    model.model_name = name  # type: ignore[assignment]
    model.model_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model
