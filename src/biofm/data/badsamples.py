"""Counting bad samples across batches, and failing a run only past a bad-sample fraction."""

from __future__ import annotations

from dataclasses import dataclass, field

from biofm.core.errors import BiofmError
from biofm.data.collate import ViewBatch


class TooManyBadSamplesError(BiofmError):
    """More samples were unusable than the configured fraction allows."""


@dataclass
class BadSampleCounter:
    """Running totals: ``seen`` samples attempted, ``bad`` skipped, first ``max_ids`` bad ids."""

    seen: int = 0
    bad: int = 0
    ids: list[str] = field(default_factory=list)
    max_ids: int = 1000

    @property
    def fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def add(self, n_seen: int, n_bad: int, ids: list[str] | None = None) -> None:
        """Add ``n_seen`` attempted samples of which ``n_bad`` were skipped (with their ids)."""
        self.seen += int(n_seen)
        self.bad += int(n_bad)
        room = self.max_ids - len(self.ids)
        if ids and room > 0:
            self.ids.extend(ids[:room])

    def update(self, batch: ViewBatch) -> None:
        """Count one collated batch (its usable samples plus its skipped ones)."""
        self.add(batch.batch_size + batch.n_skipped, batch.n_skipped, batch.skipped_ids)


def check_bad_fraction(
    counter: BadSampleCounter, max_fraction: float, min_seen: int = 100
) -> None:
    """Raise ``TooManyBadSamplesError`` (a ``BiofmError``) when the bad fraction exceeds
    ``max_fraction``. Below ``min_seen`` attempted samples nothing is raised, so one early bad
    file does not end a run; call with ``min_seen=0`` at the end of an epoch.
    """
    if counter.seen == 0 or counter.seen < min_seen:
        return
    if counter.fraction > max_fraction:
        shown = ", ".join(counter.ids[:10]) or "(ids not recorded)"
        more = f" and {counter.bad - 10} more" if counter.bad > 10 else ""
        raise TooManyBadSamplesError(
            f"{counter.bad} of {counter.seen} samples ({counter.fraction:.1%}) could not be used, "
            f"above the allowed fraction {max_fraction:.1%}; bad ids: {shown}{more} (the log "
            "names the reason for each). Fix: repair or remove these images from the "
            "manifest, or raise the allowed bad-sample fraction if they are expected"
        )
