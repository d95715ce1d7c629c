"""biofm.cli."""
