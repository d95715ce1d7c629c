"""Release: weights cards, release folders, Hugging Face Hub, torch.hub and bioimage.io.

``biofm.load_model`` (here :func:`~biofm.release.weights.load_model`) loads any biofm encoder:
a model shipped with the package, a local folder or a Hub repo id.
"""

from biofm.release.pretrained import PRETRAINED, list_pretrained
from biofm.release.weights import load_model, load_release_dir, save_release

__all__ = ["PRETRAINED", "list_pretrained", "load_model", "load_release_dir", "save_release"]
