"""Self-supervised objectives; each forward returns {"loss": ..., logs}."""
