"""biofm.cli."""

MODEL_HELP = ("a shipped model (biofm-vit-tiny), a release or encoder folder, a 'biofm train' run "
              "directory, or a Hugging Face repo id (org/name)")
