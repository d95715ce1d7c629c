"""biofm.data."""
