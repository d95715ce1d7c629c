"""Normalisation statistics fitted over many images: per source/plate, or from a reference set.

Per-image percentile scaling makes every image span the same range, which erases the absolute
intensity that many phenotypes live in (DNA content, dose-dependent stains). ``NormStats``
holds per-channel ``(lo, hi)`` percentiles fitted over a sample of pixels pooled across the
images of each group (a plate or source column of a manifest), plus the pooled ``reference``
over every image used for the fit. Scopes (``NormalizeConfig.scope``):

- ``image``: each image by its own percentiles (no ``NormStats``);
- ``source``: each image by the statistics of its group (``group_by`` column);
- ``reference``: every image by one set of statistics (e.g. control wells, or a saved file).

A group with too few pixels to fit (``min_pixels``) falls back to the reference statistics,
or to per-image scaling when the reference is too small as well, with a warning naming which.
Statistics are saved as JSON (``biofm-norm-stats/1``) with runs, embeddings and model cards.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError
from biofm.core.sample import UNKNOWN_CHANNEL as UNKNOWN

log = logging.getLogger(__name__)

FORMAT = "biofm-norm-stats/1"
SCOPES = ("image", "source", "reference")
GROUP_COLUMNS = ("plate", "source", "study")
"""Manifest columns tried, in order, when ``group_by`` is "auto"."""

Range = tuple[float, float, int]  # lo, hi, pixels seen


@dataclass
class NormStats:
    """Per-channel (lo, hi) percentiles per group, and pooled over all groups (``reference``).

    ``groups`` maps a group key (the value of the ``group_by`` column) to {channel: (lo, hi,
    n_pixels)}; ``reference`` is the same over every image of the fit. ``model`` optionally
    pins the weights (sha256) the statistics were fitted for.
    """

    scope: str
    low: float
    high: float
    group_by: str | None = None
    groups: dict[str, dict[str, Range]] = field(default_factory=dict)
    reference: dict[str, Range] = field(default_factory=dict)
    min_pixels: int = 16384
    model: str | None = None
    fitted_on: str = ""
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scope not in ("source", "reference"):
            raise BadInputError(
                f"normalisation statistics of scope {self.scope!r}",
                "statistics are for scope 'source' or 'reference'; scope 'image' needs none",
            )

    # ------------------------------------------------------------------ lookup
    @property
    def channels(self) -> list[str]:
        """Every channel name that has statistics."""
        names = set(self.reference)
        for table in self.groups.values():
            names |= set(table)
        return sorted(names)

    def table_for(self, group: Any = None) -> tuple[dict[str, Range] | None, str]:
        """The {channel: range} table for ``group`` and which one it is ("group", "reference"
        or "image" when no statistics are usable), warning once per group on a fall-back."""
        key = None if group is None or _isna(group) else str(group)
        if self.scope == "source" and key is not None and key in self.groups:
            return self.groups[key], "group"
        if _enough(self.reference, self.min_pixels):
            if self.scope == "source" and self.group_by:
                self._warn(key, f"group {key!r} has no statistics of its own (too few pixels "
                                "or not in the fit): using the reference statistics pooled over "
                                "all groups")  # fmt: skip
            return self.reference, "reference"
        self._warn(key, f"group {key!r}: too few pixels to fit statistics "
                        f"(< {self.min_pixels}); falling back to per-image scaling")  # fmt: skip
        return None, "image"

    def ranges(
        self, channels: Sequence[str], group: Any = None, where: str | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) arrays (C,) for an image with these channel names in ``group``, or None
        for per-image scaling (the fall-back). Names match exactly, else by canonical stain."""
        table, kind = self.table_for(group)
        if table is None:
            return None
        lo = np.empty(len(channels))
        hi = np.empty(len(channels))
        for i, name in enumerate(channels):
            lo[i], hi[i], _ = self._channel(table, kind, name, group, where)
        return lo, hi

    def _channel(self, table: dict[str, Range], kind: str, name: str, group: Any,
                 where: str | None) -> Range:  # fmt: skip
        """A channel's range in ``table``; a channel a group lacks but the reference holds
        (it was rare in the group's fit) comes from the reference, with a warning."""
        try:
            return table[match_channel(name, table, where)]
        except BadInputError:
            if kind != "group" or not _enough(self.reference, self.min_pixels):
                raise
            key = match_channel(name, self.reference, where)
            self._warn(f"{group}/{name}", f"group {group!r} has no statistics for channel "
                       f"{name!r}: using the reference statistics for it")  # fmt: skip
            return self.reference[key]

    def _warn(self, key: str | None, message: str) -> None:
        tag = str(key)
        if tag not in self._warned:
            self._warned.add(tag)
            warnings.warn(message, UserWarning, stacklevel=3)
            log.warning(message)

    # ------------------------------------------------------------------ checks
    def check_for(self, card: dict[str, Any], model_sha: str | None = None) -> None:
        """Refuse statistics fitted for other weights or other percentiles than ``card``'s."""
        if self.model and model_sha and self.model != model_sha:
            raise BadInputError(
                f"these normalisation statistics were fitted for another model "
                f"(weights {self.model[:12]}, this one {model_sha[:12]})",
                "fit statistics on your images (drop --norm-stats: biofm embed fits them on "
                "the input) or pass the statistics saved with this model",
            )
        norm = card.get("normalize") or {}
        want = (float(norm.get("low", self.low)), float(norm.get("high", self.high)))
        if not np.allclose(want, (self.low, self.high)):
            raise BadInputError(
                f"statistics use percentiles {self.low}-{self.high}, the model expects "
                f"{want[0]}-{want[1]}",
                "refit them with the model's percentiles (drop --norm-stats to fit on the input)",
            )

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        def plain(t: dict[str, Range]) -> dict[str, list[float]]:
            return {k: [float(v[0]), float(v[1]), int(v[2])] for k, v in sorted(t.items())}

        return {"format": FORMAT, "scope": self.scope, "low": self.low, "high": self.high,
                "group_by": self.group_by, "min_pixels": self.min_pixels, "model": self.model,
                "fitted_on": self.fitted_on, "reference": plain(self.reference),
                "groups": {g: plain(t) for g, t in sorted(self.groups.items())}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> NormStats:
        if d.get("format") != FORMAT:
            raise BadInputError(
                f"not a biofm normalisation statistics file (format {d.get('format')!r})",
                f"pass a file written by biofm (format {FORMAT}), e.g. the *.norm.json saved "
                "beside an embedding or norm_stats.json in a run directory",
                where,
            )
        try:
            def table(t: dict[str, Any]) -> dict[str, Range]:
                return {str(k): (float(v[0]), float(v[1]), int(v[2])) for k, v in t.items()}

            return cls(scope=str(d["scope"]), low=float(d["low"]), high=float(d["high"]),
                       group_by=d.get("group_by"), min_pixels=int(d.get("min_pixels", 16384)),
                       model=d.get("model"), fitted_on=str(d.get("fitted_on", "")),
                       reference=table(d.get("reference", {})),
                       groups={str(g): table(t) for g, t in d.get("groups", {}).items()})
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise BadInputError(f"malformed normalisation statistics ({err})",
                                "re-create the file with biofm", where) from err  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path} does not exist",
                                "pass the path of a saved statistics file (*.norm.json)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BadInputError(f"{path} is not JSON ({err})",
                                "pass a statistics file written by biofm") from err
        return cls.from_dict(data, str(path))


def _isna(value: Any) -> bool:
    try:
        return bool(value != value) or value is None or str(value) == ""
    except (TypeError, ValueError):
        return False


def _enough(table: dict[str, Range], min_pixels: int) -> bool:
    return bool(table) and min(v[2] for v in table.values()) >= min_pixels


def match_channel(name: str, table: dict[str, Range], where: str | None) -> str:
    """The key of ``table`` for channel ``name``: itself, else the one key of the same
    canonical stain (DAPI ~ Hoechst); refused with the fix when there is none."""
    if name in table:
        return name
    canon = DEFAULT_VOCAB.canonical(name)
    same = [k for k in table if canon != UNKNOWN and DEFAULT_VOCAB.canonical(k) == canon]
    if len(same) == 1:
        return same[0]
    raise BadInputError(
        f"channel {name!r} has no normalisation statistics (the statistics hold "
        f"{sorted(table)})",
        "fit statistics on images with these channels (drop --norm-stats to fit on the input, "
        "or use --norm image), or rename the channels to those of the statistics",
        where,
    )


class StatsFitter:
    """Accumulates a strided pixel sample per (group, channel); ``result()`` fits percentiles.

    Each image contributes at most ``per_image`` pixels per channel (a regular grid); a
    (group, channel) pool is thinned by half whenever it exceeds ``budget`` values.
    """

    def __init__(self, scope: str, low: float, high: float, group_by: str | None = None, *,
                 per_image: int = 8192, budget: int = 2_000_000,
                 min_pixels: int = 16384) -> None:  # fmt: skip
        if scope not in ("source", "reference"):
            raise BadInputError(f"scope {scope!r} has no statistics to fit",
                                "fit statistics for scope 'source' or 'reference'")
        self.scope, self.low, self.high, self.group_by = scope, low, high, group_by
        self.per_image, self.budget, self.min_pixels = per_image, budget, min_pixels
        self._pools: dict[tuple[str, str], list[np.ndarray]] = {}
        self._sizes: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], int] = {}
        self.n_images = 0

    def add(self, pixels: np.ndarray, channels: Sequence[str], group: Any = None) -> None:
        c, h, w = pixels.shape
        stride = max(1, int(np.sqrt(h * w / self.per_image)))
        sub = pixels[:, ::stride, ::stride].reshape(c, -1).astype(np.float32)
        key = "*" if self.scope == "reference" or _isna(group) else str(group)
        for i, name in enumerate(channels):
            values = sub[i][np.isfinite(sub[i])]
            k = (key, str(name))
            pool = self._pools.setdefault(k, [])
            pool.append(values)
            self._sizes[k] = self._sizes.get(k, 0) + values.size
            self._seen[k] = self._seen.get(k, 0) + h * w
            if self._sizes[k] > self.budget:
                merged = np.concatenate(pool)[::2]
                self._pools[k] = [merged]
                self._sizes[k] = merged.size
        self.n_images += 1

    def result(self, fitted_on: str = "") -> NormStats:
        if not self._pools:
            raise BadInputError("no image to fit normalisation statistics on",
                                "check the input list, or use --norm image")  # fmt: skip
        groups: dict[str, dict[str, Range]] = {}
        pooled: dict[str, list[np.ndarray]] = {}
        seen: dict[str, int] = {}
        for (g, name), pool in sorted(self._pools.items()):
            values = np.concatenate(pool)
            pooled.setdefault(name, []).append(values)
            seen[name] = seen.get(name, 0) + self._seen[(g, name)]
            if self._seen[(g, name)] >= self.min_pixels and g != "*":
                groups.setdefault(g, {})[name] = _fit(values, self.low, self.high,
                                                      self._seen[(g, name)])
        reference = {n: _fit(np.concatenate(v), self.low, self.high, seen[n])
                     for n, v in pooled.items()}  # fmt: skip
        return NormStats(self.scope, self.low, self.high,
                         self.group_by if self.scope == "source" else None, groups, reference,
                         self.min_pixels, fitted_on=fitted_on)  # fmt: skip


def _fit(values: np.ndarray, low: float, high: float, n: int) -> Range:
    if values.size == 0:
        return (0.0, 0.0, n)
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:  # sparse signal: a few bright spots over a flat background
        lo, hi = float(values.min()), float(values.max())
    return (float(lo), float(hi), int(n))
