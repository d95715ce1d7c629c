"""biofm.io."""
