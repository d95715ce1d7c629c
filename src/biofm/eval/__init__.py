"""biofm.eval."""
