"""biofm.release."""
