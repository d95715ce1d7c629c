"""``ManifestDataset``: a map-style dataset of crops of the fields listed in a manifest.

Item ``i`` is crop ``k`` of field ``f``. A field is loaded, normalised and its nuclei found once,
then kept in a small per-worker LRU cache (fields are large and reused by their crops). Each
item draws its randomness from (seed, epoch, i), so ``set_epoch`` changes it reproducibly.
A bad sample yields ``Skipped(id, reason)``, logged once per id; ``collate_views`` counts it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from biofm.core.channels import DEFAULT_VOCAB, ChannelVocab
from biofm.core.errors import BadInputError, ConfigError
from biofm.core.sample import Sample
from biofm.data.collate import Item, Skipped
from biofm.data.crops import PreparedField
from biofm.data.norm_stats import NormStats
from biofm.data.normalize import NormalizeConfig, normalize_sample
from biofm.data.rng import generator_for, randint
from biofm.data.views import Transform
from biofm.io.manifest import records

log = logging.getLogger(__name__)

LoadFn = Callable[[Mapping[str, Any]], Sample]
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    BadInputError, OSError, ValueError, EOFError, RuntimeError,
)
"""Errors that mark one sample as unusable (corrupt or missing file, bad shape, no signal)."""


class IoLoader:
    """Picklable load_fn (workers may be spawned): ``biofm.io.load_sample(row, root)``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def __call__(self, row: Mapping[str, Any]) -> Sample:
        from biofm.io import load_sample

        return load_sample(row, root=self.root)


def crop_counts(
    df: pd.DataFrame, crop_size: int | None, crops_per_field: int | Literal["area"]
) -> np.ndarray:
    """(N,) crops per field: a constant, or ``H*W // crop_size**2`` (>= 1) for "area", which
    needs ``height``/``width`` columns in the manifest."""
    n = len(df)
    if crops_per_field != "area":
        return np.full(n, int(crops_per_field), dtype=np.int64)
    if crop_size is None:
        return np.ones(n, dtype=np.int64)
    if not {"height", "width"} <= set(df.columns):
        raise ConfigError(
            'crops_per_field="area" needs the image size of every field',
            "add 'height' and 'width' columns to the manifest (see add_image_sizes), or pass "
            "crops_per_field as an integer",
        )
    hw = df["height"].to_numpy(np.int64) * df["width"].to_numpy(np.int64)
    return np.maximum(hw // (crop_size * crop_size), 1)


def add_image_sizes(df: pd.DataFrame, load_fn: LoadFn | None = None) -> pd.DataFrame:
    """Copy of ``df`` with ``height``/``width`` columns measured by loading each field
    (0 for a field that fails to load; it is skipped later)."""
    load = load_fn or IoLoader()
    sizes = []
    for row in records(df):
        try:
            sizes.append(load(row).shape[1:])
        except LOAD_ERRORS:
            sizes.append((0, 0))
    out = df.copy()
    out["height"] = [s[0] for s in sizes]
    out["width"] = [s[1] for s in sizes]
    return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python values, NaN -> None (meta travels through worker pipes)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def prepare_field(
    sample: Sample, row: Mapping[str, Any], sid: str, crop_size: int | None, *,
    normalize: NormalizeConfig, resize_small: bool, vocab: ChannelVocab,
    stats: NormStats | None = None,
) -> PreparedField:
    """A loaded field, normalised (by ``stats`` of its group when given) and ready to crop;
    its meta is the row's metadata."""
    sample.meta.setdefault("id", sid)
    group = row.get(stats.group_by) if stats is not None and stats.group_by else None
    pixels = normalize_sample(sample, normalize, stats, group)
    meta = {k: _plain(v) for k, v in row.items() if k not in ("paths", "channels")}
    return PreparedField.build(pixels, sample.channels, crop_size, resize_small=resize_small,
                               vocab=vocab, id=sid, meta=meta)


def field_item(
    prepared: PreparedField, meta: dict[str, Any], gen: torch.Generator,
    crop_size: int | None, nucleus_fraction: float, transform: Transform | None,
    crop_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """One dataset item of ``prepared``: a crop (or the whole field when ``crop_size`` is
    None) through ``transform``: ``{"views", "id", "meta", "n_global"}``. With
    ``crop_sizes`` each crop's side is drawn from them (multi-scale: cells to tiles)."""
    if crop_size is None:
        x = torch.from_numpy(prepared.pixels)
    else:
        size = crop_sizes[randint(gen, len(crop_sizes))] if crop_sizes else crop_size
        crop = prepared.crop(size, gen, nucleus_fraction)
        x = torch.from_numpy(crop.pixels)
        meta["origin"] = crop.origin
        meta["nucleus_centred"] = crop.centre is not None
        meta["crop_size"] = size
    names = list(prepared.channels)
    views = transform(x, names, gen) if transform else [(x, names)]
    n_global = int(getattr(transform, "n_global", len(views)))
    return {"views": views, "id": prepared.id, "meta": meta, "n_global": n_global}


class ManifestDataset(Dataset[Item]):
    """Crops of manifest fields -> ``{"views", "id", "meta", "n_global"}`` or ``Skipped``.

    ``crop_size=None`` uses whole fields (one item per field, e.g. with ``TileViews`` for
    embedding). ``nucleus_fraction`` is the share of crops centred on a nucleus when the field
    has a DNA channel with nuclei (the rest are random tiles).
    """

    def __init__(
        self,
        manifest: pd.DataFrame | str | Path,
        transform: Transform | None = None,
        *,
        crop_size: int | None,
        crops_per_field: int | Literal["area"] = 1,
        load_fn: LoadFn | None = None,
        root: Path | None = None,
        cache_size: int = 4,
        seed: int = 0,
        nucleus_fraction: float = 1.0,
        resize_small: bool = False,
        normalize: NormalizeConfig | None = None,
        vocab: ChannelVocab = DEFAULT_VOCAB,
        norm_stats: NormStats | None = None,
        crop_sizes: tuple[int, ...] = (),
    ) -> None:
        _check_args(crop_size, crops_per_field, cache_size, nucleus_fraction)
        if crop_sizes and (crop_size is None or max(crop_sizes) > crop_size
                           or min(crop_sizes) < 1):  # fmt: skip
            raise ConfigError(f"crop_sizes={list(crop_sizes)} with crop_size={crop_size}",
                              "give crop sizes >= 1 and <= crop_size (the largest crop)")
        self.crop_sizes = tuple(int(c) for c in crop_sizes)
        if isinstance(manifest, (str, Path)):
            from biofm.io import read_manifest

            root = root if root is not None else Path(manifest).parent
            manifest = read_manifest(manifest)
        self.rows: list[dict[str, Any]] = records(manifest)
        self.transform = transform
        self.crop_size = crop_size
        self.load_fn = load_fn or IoLoader(root)
        self.cache_size = cache_size
        self.seed = seed
        self.nucleus_fraction = nucleus_fraction
        self.resize_small = resize_small
        self.normalize = normalize or NormalizeConfig()
        self.norm_stats = norm_stats
        self.vocab = vocab
        self._ends = np.cumsum(crop_counts(manifest, crop_size, crops_per_field))
        # shared memory: set_epoch in the main process reaches persistent workers too
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._cache: OrderedDict[int, PreparedField | Skipped] = OrderedDict()
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ indexing
    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Change every item's randomness (deterministically) for a new epoch."""
        self._epoch.fill_(int(epoch))

    def field_bounds(self) -> np.ndarray:
        """(F + 1,) first item index of every field, then ``len(self)``."""
        return np.concatenate([[0], self._ends]).astype(np.int64)

    def locate(self, index: int) -> tuple[int, int]:
        """Item index -> (field index, crop index within the field)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        f = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[f - 1]) if f else 0
        return f, index - start

    def sample_id(self, field_index: int) -> str:
        row = self.rows[field_index]
        return str(row.get("id") or f"row{field_index}")

    # ------------------------------------------------------------------ fields
    def field(self, field_index: int) -> PreparedField | Skipped:
        """The prepared (normalised, nuclei found) field, from the LRU cache when there."""
        hit = self._cache.get(field_index)
        if hit is not None:
            self._cache.move_to_end(field_index)
            return hit
        value = self._prepare(field_index)
        if self.cache_size > 0:
            self._cache[field_index] = value
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value

    def _prepare(self, field_index: int) -> PreparedField | Skipped:
        sid = self.sample_id(field_index)
        row = self.rows[field_index]
        try:
            return prepare_field(self.load_fn(row), row, sid, self.crop_size,
                                 normalize=self.normalize, resize_small=self.resize_small,
                                 vocab=self.vocab, stats=self.norm_stats)
        except LOAD_ERRORS as err:
            if sid not in self._logged:
                self._logged.add(sid)
                log.warning("skipping bad sample %s: %s", sid, err)
            return Skipped(sid, f"{type(err).__name__}: {err}")

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> Item:
        f, k = self.locate(index)
        prepared = self.field(f)
        if isinstance(prepared, Skipped):
            return prepared
        gen = generator_for(self.seed, self.epoch, index)
        meta = {**prepared.meta, "index": index, "field_index": f, "crop_index": k}
        return field_item(prepared, meta, gen, self.crop_size, self.nucleus_fraction,
                          self.transform, self.crop_sizes)


def _check_args(
    crop_size: int | None, crops_per_field: int | str, cache_size: int, nucleus_fraction: float
) -> None:
    if crop_size is not None and crop_size < 1:
        raise ConfigError(f"crop_size={crop_size}", "give a crop size >= 1 pixel, or None")
    if crops_per_field != "area" and not (
        isinstance(crops_per_field, int) and crops_per_field >= 1
    ):
        raise ConfigError(
            f"crops_per_field={crops_per_field!r}", 'give an integer >= 1 or "area"'
        )
    if cache_size < 0:
        raise ConfigError(f"cache_size={cache_size}", "give 0 (no cache) or more fields")
    if not 0 <= nucleus_fraction <= 1:
        raise ConfigError(f"nucleus_fraction={nucleus_fraction}", "give a value in [0, 1]")
