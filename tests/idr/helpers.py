"""Shared pieces of the IDR tests: a fast retry policy and a stand-in serving one study."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from biofm.idr._standin_study import StandInStudy
from biofm.idr.http import IDRClient, RetryPolicy
from biofm.idr.testing import StandInIDR

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02, timeout_s=5.0)
Served = tuple[StandInIDR, StandInStudy, IDRClient]


@contextlib.contextmanager
def served_study(**study: Any) -> Iterator[Served]:
    """A started stand-in with one idr0036 study (``add_study`` keywords) and a client."""
    with StandInIDR() as idr:
        built = idr.add_study("idr0036", **study)
        with IDRClient(idr.url, policy=FAST) as client:
            yield idr, built, client
