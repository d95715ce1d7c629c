"""Encoders behind one contract, built by name through the registry."""

from biofm.models import bioresnet as _bioresnet  # noqa: F401  (registers the models)
from biofm.models import boc_vit as _boc_vit  # noqa: F401
from biofm.models import variants as _variants  # noqa: F401
from biofm.models.base import Encoder, TokenOutput
from biofm.models.bioresnet import BioResNet
from biofm.models.biovit import BioViT, BioViTConfig
from biofm.models.boc_vit import BoCViT
from biofm.models.registry import create_model, list_models, register_model

__all__ = ["BioResNet", "BioViT", "BioViTConfig", "BoCViT", "Encoder", "TokenOutput",
           "create_model", "list_models", "register_model"]
