"""biofm.idr."""
