"""Encoders behind one contract, built by name through the registry."""

from biofm.models import variants as _variants  # noqa: F401  (registers the models)
from biofm.models.biovit import BioViT, BioViTConfig, TokenOutput
from biofm.models.registry import create_model, list_models, register_model

__all__ = ["BioViT", "BioViTConfig", "TokenOutput", "create_model", "list_models", "register_model"]
