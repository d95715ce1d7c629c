"""Hugging Face Hub: ``BiofmModel`` with ``save_pretrained`` / ``from_pretrained`` /
``push_to_hub`` (``PyTorchModelHubMixin``), in the release-folder layout.

``BiofmModel`` wraps a biofm encoder; its files are those of :func:`save_release`
(``config.json`` card, ``model.safetensors`` with the encoder's own keys, ``README.md`` model
card), so ``biofm.load_model("org/name")`` and ``BiofmModel.from_pretrained("org/name")``
read the same repository. Needs ``pip install 'biofm[hub]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from biofm.core.batch import PackedBatch
from biofm.core.errors import MissingExtraError
from biofm.release.modelcard import REPO_URL, TAGS, model_card_markdown
from biofm.release.weights import (
    CARD_FILE,
    README_FILE,
    WEIGHTS_FILE,
    _download,
    load_release_dir,
    save_release,
)

_Mixin: Any
try:
    from huggingface_hub import ModelCard, PyTorchModelHubMixin
    _Mixin = PyTorchModelHubMixin
except ImportError:  # pragma: no cover - exercised only without the extra
    _Mixin = None


def _require_hub() -> None:
    if _Mixin is None:
        raise MissingExtraError("huggingface_hub", "hub")


_HUB_INFO: dict[str, Any] = {} if _Mixin is None else {
    "library_name": "biofm", "license": "apache-2.0", "pipeline_tag": "image-feature-extraction",
    "tags": list(TAGS), "repo_url": REPO_URL, "docs_url": REPO_URL + "/tree/main/docs"}


_Base: Any = _Mixin or object


class BiofmModel(nn.Module, _Base, **_HUB_INFO):
    """A biofm encoder on the Hub. ``card`` is a release card (see ``biofm.release.card``);
    ``forward(batch)`` returns the encoder's (B, D) embeddings."""

    release_card: dict[str, Any]
    encoder: nn.Module

    def __init__(self, card: dict[str, Any], encoder: nn.Module | None = None) -> None:
        super().__init__()
        from biofm.release.card import check_card, model_from_card

        self.release_card = check_card(card, str(card.get("name", "card")))
        self.encoder = model_from_card(self.release_card, "card") if encoder is None else encoder
        self.encoder.weights_card = self.release_card  # type: ignore[assignment]

    @classmethod
    def from_encoder(cls, encoder: nn.Module, card: Mapping[str, Any] | None = None
                     ) -> BiofmModel:
        """Wrap a loaded encoder (its ``weights_card`` unless ``card`` is given)."""
        _require_hub()
        return cls(dict(card or getattr(encoder, "weights_card", {})), encoder=encoder)

    def forward(self, batch: PackedBatch) -> Any:
        return self.encoder(batch)

    # -- mixin hooks: the release-folder layout instead of the mixin's defaults ------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_release(self.encoder, save_directory, self.release_card, readme=True)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        return ModelCard(model_card_markdown(self.release_card))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *,
                        force_download: bool = False, token: str | bool | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        revision: str | None = None, **kwargs: Any) -> BiofmModel:
        """A release folder or Hub repo id -> ``BiofmModel``; errors are biofm's (they name
        the fix) and the card is read once, by the same strict loader as ``biofm.load_model``."""
        _require_hub()
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path),
                                    revision=revision, cache_dir=cache_dir,
                                    force_download=force_download,
                                    local_files_only=local_files_only, token=token)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None,
                         cache_dir: str | Path | None, force_download: bool,
                         local_files_only: bool, token: str | bool | None,
                         config: dict[str, Any] | None = None, **kwargs: Any) -> BiofmModel:
        folder = Path(model_id)
        if not (folder / CARD_FILE).is_file():
            folder = _download(model_id, revision, cache_dir, local_files_only)
        encoder = load_release_dir(folder, model_id)
        return cls(dict(getattr(encoder, "weights_card", {})), encoder=encoder)


def export_hf(model: nn.Module, out_dir: str | Path, *, repo_id: str | None = None,
              private: bool | None = None, token: str | None = None) -> str | None:
    """Write the Hub folder of ``model`` (an encoder with a release card) to ``out_dir``;
    with ``repo_id`` also push it, returning the commit URL."""
    _require_hub()
    wrapped: Any = BiofmModel.from_encoder(model)
    wrapped.save_pretrained(out_dir)
    if repo_id is None:
        return None
    return str(wrapped.push_to_hub(repo_id, private=private, token=token,
                                   allow_patterns=[CARD_FILE, WEIGHTS_FILE, README_FILE]))
