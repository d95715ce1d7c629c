"""biofm.train."""
