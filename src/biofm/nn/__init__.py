"""biofm.nn."""
