"""Fit normalisation statistics (``NormStats``) over the images of a manifest.

``fit_manifest_stats`` loads a random sample of at most ``per_group`` images of each group
(plate or source column) and channel set within it -- optionally only the rows ``fit_on``
selects, e.g. the control wells (``compound=DMSO``) -- pools a strided pixel sample per
channel and fits the percentiles of the normalisation config. Images that fail to load are
skipped (they are counted and logged).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biofm.core.errors import BadInputError
from biofm.core.sample import Sample
from biofm.data.dataset import LOAD_ERRORS, IoLoader, LoadFn
from biofm.data.norm_stats import GROUP_COLUMNS, NormStats, StatsFitter, match_channel
from biofm.data.normalize import NormalizeConfig
from biofm.io.manifest import SEP, records

log = logging.getLogger(__name__)


def resolve_group_column(df: pd.DataFrame, group_by: str | None) -> str | None:
    """The manifest column that groups images for scope ``source``: ``group_by`` itself
    (which must exist), or for "auto" the first of plate/source/study filled on every row (else
    the first with any values); None when there is none."""
    if not group_by or group_by == "auto":
        present = [c for c in GROUP_COLUMNS if c in df.columns and df[c].notna().any()]
        full = [c for c in present if df[c].notna().all()]
        picked = full or present
        return picked[0] if picked else None
    if group_by not in df.columns:
        raise BadInputError(
            f"the group column {group_by!r} is not in the manifest (columns: "
            f"{', '.join(map(str, df.columns))})",
            "name an existing column with --norm-by, or leave it out (plate, source or study "
            "when there is one), or use --norm reference for one set over all images",
        )
    return group_by


def select_rows(df: pd.DataFrame, fit_on: str | None) -> pd.Series:
    """Boolean mask of the rows ``fit_on`` selects: "column=value[|value...]" (text compare)."""
    if not fit_on:
        return pd.Series(True, index=df.index)
    col, sep, values = fit_on.partition("=")
    col = col.strip()
    if not sep or col not in df.columns:
        raise BadInputError(
            f"--norm-fit-on {fit_on!r} does not name a manifest column and value",
            "use COLUMN=VALUE (e.g. compound=DMSO, or control=true; several values with |); "
            f"columns: {', '.join(map(str, df.columns))}",
        )
    wanted = {v.strip() for v in values.split("|")}
    mask = df[col].astype(str).str.strip().isin(wanted)
    if not mask.any():
        raise BadInputError(f"no row has {col} in {sorted(wanted)}",
                            f"check the values of column {col!r}")  # fmt: skip
    return mask


def fit_manifest_stats(
    df: pd.DataFrame, cfg: NormalizeConfig, *, load_fn: LoadFn | None = None,
    root: Path | None = None, fit_on: str | None = None, per_group: int = 256, seed: int = 0,
    min_pixels: int = 16384,
) -> NormStats:  # fmt: skip
    """``NormStats`` of scope ``cfg.scope`` fitted over (a sample of) the manifest's images."""
    if cfg.scope == "image":
        raise BadInputError("scope 'image' scales each image by itself: nothing to fit",
                            "use scope 'source' or 'reference'")  # fmt: skip
    group_by = resolve_group_column(df, cfg.group_by) if cfg.scope == "source" else None
    rows = df[select_rows(df, fit_on).to_numpy()]
    keys = rows[group_by].astype(str) if group_by else pd.Series("*", index=rows.index)
    if "channels" in rows.columns:  # every channel set of a group gets its own sample
        keys = keys + "|" + rows["channels"].fillna("").astype(str)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for _, idx in rows.groupby(keys, sort=True).indices.items():
        picked += sorted(rng.choice(idx, min(per_group, len(idx)), replace=False).tolist())
    fitter = StatsFitter(cfg.scope, cfg.low, cfg.high, group_by, min_pixels=min_pixels)
    load = load_fn or IoLoader(root)
    bad = 0
    for row in records(rows.iloc[sorted(picked)]):
        try:
            sample = load(row)
        except LOAD_ERRORS as err:
            bad += 1
            log.warning("normalisation fit: skipping %s: %s", row.get("id", "?"), err)
            continue
        fitter.add(sample.pixels, sample.channels, row.get(group_by) if group_by else None)
    if bad:
        log.warning("normalisation fit: %d of %d images could not be read", bad, len(picked))
    desc = f"{fitter.n_images} images" + (f", groups by {group_by}" if group_by else "")
    return fitter.result(fitted_on=desc + (f", rows {fit_on}" if fit_on else ""))


def stats_summary(stats: NormStats) -> dict[str, Any]:
    """A short description for logs and reports: scope, groups, channels."""
    return {"scope": stats.scope, "group_by": stats.group_by, "groups": len(stats.groups),
            "channels": stats.channels, "fitted_on": stats.fitted_on}  # fmt: skip


def stats_for_input(
    df: pd.DataFrame, card: dict[str, Any], *, scope: str | None = None,
    group_by: str | None = None, fit_on: str | None = None,
    stats_file: str | Path | None = None, root: Path | None = None,
) -> tuple[NormalizeConfig, NormStats | None]:
    """The normalisation an input list is embedded with, for a model with weights ``card``.

    A ``stats_file`` is loaded and checked against the model (percentiles, pinned weights) and
    the input's channels; otherwise scope ``source`` (the default) or ``reference`` fits
    statistics on the input itself (per ``group_by`` column, "auto": plate/source when one
    exists), and scope ``image`` scales each image by itself.
    """
    base = NormalizeConfig(**card["normalize"]) if "normalize" in card else NormalizeConfig()
    if stats_file is not None:
        stats = NormStats.load(stats_file)
        stats.check_for(card, card.get("weights_sha256"))
        cfg = dataclasses.replace(base, scope=stats.scope, group_by=stats.group_by or "auto")
        check_channels(df, stats, str(stats_file), root)
        return cfg, stats
    cfg = dataclasses.replace(base, scope=scope or "source", group_by=group_by or "auto")
    if cfg.scope == "image":
        return cfg, None
    stats = fit_manifest_stats(df, cfg, root=root, fit_on=fit_on)
    return dataclasses.replace(cfg, group_by=stats.group_by or "auto"), stats


def check_channels(df: pd.DataFrame, stats: NormStats, where: str,
                   root: Path | None = None) -> None:  # fmt: skip
    """Refuse a statistics file that lacks a channel of the input (checked on the distinct
    channel lists of the manifest, before any image is embedded)."""
    if "channels" not in df.columns:
        return
    lookup = {n: (0.0, 0.0, 0) for n in stats.channels}
    texts = df["channels"].fillna("").astype(str)
    named = [[n for n in t.split(SEP) if n] for t in texts.unique() if t]
    if (texts == "").any():  # names from the files themselves: read the first such image
        row = records(df[(texts == "").to_numpy()].head(1))[0]
        with contextlib.suppress(*LOAD_ERRORS):  # unreadable: skipped and reported later
            named.append(list(IoLoader(root)(row).channels))
    for names in named:
        for name in names:
            match_channel(name, lookup, where)


def fit_sample_stats(
    samples: Sequence[Sample], scope: str, *, group_by: str | None = None,
    mask: Sequence[bool] | None = None, low: float = 1.0, high: float = 99.8,
    min_pixels: int = 16384,
) -> NormStats:  # fmt: skip
    """``NormStats`` over in-memory samples: per ``sample.meta[group_by]`` (scope source) or
    pooled (reference); ``mask`` selects the samples to fit on (e.g. controls)."""
    fitter = StatsFitter(scope, low, high, group_by if scope == "source" else None,
                         min_pixels=min_pixels)  # fmt: skip
    keep = [True] * len(samples) if mask is None else list(mask)
    for s, k in zip(samples, keep, strict=True):
        if k:
            fitter.add(s.pixels, s.channels, s.meta.get(group_by) if group_by else None)
    return fitter.result(fitted_on=f"{fitter.n_images} samples")
