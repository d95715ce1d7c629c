"""biofm.ssl."""
