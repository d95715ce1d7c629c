"""torch.hub entry points of biofm: channel-agnostic encoders for microscopy images.

    import torch
    model = torch.hub.load("biofm/biofm:v0.1.0", "biovit_tiny", pretrained=True, trust_repo=True)

Every entry point returns an encoder in eval mode whose ``forward`` takes a
``biofm.core.batch.PackedBatch`` (any number, order and type of channels per image) and returns
(B, D) embeddings; ``model.weights_card`` says how to feed it (channel names, normalisation,
tile size). ``pretrained``: ``False`` (fresh weights; other keyword arguments go to the
architecture), ``True`` (the weights released for the architecture, shipped with the
repository, no download), or a string: a release folder, a Hugging Face repo id or the URL of
a ``NAME-<sha256 prefix>.safetensors`` file written by ``biofm export torchhub``.
"""

import os
import sys

dependencies = ["torch", "numpy", "safetensors"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "biofm")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from biofm.release.torchhub import hub_model as _hub_model  # noqa: E402


def biovit_tiny(pretrained=False, **kwargs):
    """BioViT-Tiny/16 (5.4 M parameters, 192-d): channel-adaptive ViT, one token set per
    channel with a channel identity. ``pretrained=True``: biofm-vit-tiny, SimCLR-pretrained on a
    real 1-6 channel microscopy corpus (shipped; no download)."""
    return _hub_model("biovit_tiny", pretrained, **kwargs)


def biovit_small(pretrained=False, **kwargs):
    """BioViT-Small/16 (21 M parameters, 384-d). No released weights yet: ``pretrained`` must
    be False or a folder / repo id / URL."""
    return _hub_model("biovit_small", pretrained, **kwargs)


def biovit_base(pretrained=False, **kwargs):
    """BioViT-Base/16 (85 M parameters, 768-d). No released weights yet."""
    return _hub_model("biovit_base", pretrained, **kwargs)


def boc_vit_small(pretrained=False, **kwargs):
    """Bag-of-channels ViT-Small/16 (each channel embedded alone, then pooled; 384-d)."""
    return _hub_model("boc_vit_small", pretrained, **kwargs)


def bioresnet18(pretrained=False, **kwargs):
    """BioResNet-18 (11 M parameters, 512-d): channel-agnostic CNN, shared per-channel stem and
    fusion across channels. No released weights yet."""
    return _hub_model("bioresnet18", pretrained, **kwargs)


def bioresnet50(pretrained=False, **kwargs):
    """BioResNet-50 (24 M parameters, 2048-d). No released weights yet."""
    return _hub_model("bioresnet50", pretrained, **kwargs)
