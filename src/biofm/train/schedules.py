"""Learning-rate and weight-decay schedules, in optimiser steps."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, final: float, warmup: int) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine to ``final``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return final
    t = min(1.0, (step - warmup) / (total - warmup))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * t))
