"""biofm.models."""
