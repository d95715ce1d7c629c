"""Models shipped inside the package: usable on a fresh machine with no download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from biofm.core.errors import BadInputError

#: released name -> (architecture, one line on what it is)
PRETRAINED: dict[str, tuple[str, str]] = {
    "biofm-vit-tiny": ("biovit_tiny", "BioViT-Tiny/16 pretrained (SimCLR) on the real "
                       "1-6 channel microscopy corpus of ../shared/data"),
}

DEFAULT_MODEL = "biofm-vit-tiny"
"""The recommended shipped model: what ``biofm embed`` and ``biofm.load_model()`` use when no
model is named."""


def pretrained_dir(name: str) -> Path:
    """The release folder of a shipped model."""
    if name not in PRETRAINED:
        raise BadInputError(f"no shipped model named {name!r}",
                            f"use one of {', '.join(PRETRAINED)}")
    folder = Path(str(resources.files("biofm") / "pretrained" / name))
    if not (folder / "config.json").is_file():
        raise BadInputError(f"the package has no weights for {name} at {folder}",
                            "reinstall biofm from a complete wheel or checkout", name)
    return folder


def list_pretrained() -> list[str]:
    return sorted(PRETRAINED)
