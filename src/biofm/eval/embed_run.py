"""Resumable embedding of large image sets (``biofm embed``).

Results are written in chunks of rows (``chunk_000000.npz``, atomically: temp file, then
rename) into a work folder next to the output, ``OUT.partial/``, together with ``state.json``,
a fingerprint of the model weights, the input list and the embedding settings. A rerun with
the same fingerprint skips the images already done; a different fingerprint is refused (pass
``restart=True`` / ``--restart`` to discard the work folder). When every image is done the
chunks are assembled in manifest order into ``OUT`` (parquet, or Zarr streamed chunk by
chunk) and the work folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from biofm.core.errors import BadInputError
from biofm.data.bucketing import order_by_channels
from biofm.data.norm_fit import stats_for_input, stats_summary
from biofm.data.norm_stats import NormStats
from biofm.data.normalize import NormalizeConfig
from biofm.eval.embed import (
    EmbedConfig,
    EmbeddedBatch,
    ensure_ids,
    iter_embed,
    resolve_block_spec,
    rows_by_id,
)
from biofm.io.embeddings import ZarrTableWriter, is_zarr, write_embeddings

log = logging.getLogger(__name__)

FORMATS = ("parquet", "zarr")
STATE = "state.json"
NORM_FILE = "norm_stats.json"


@dataclass
class EmbedSummary:
    """What :func:`embed_path` did."""

    n_images: int
    dim: int
    out: Path
    blocks: list[int] = field(default_factory=list)
    n_skipped: int = 0
    n_resumed: int = 0  # images found already done in the work folder
    norm_scope: str = "image"
    norm_file: Path | None = None  # the statistics used, saved beside the output


def work_dir(out: Path) -> Path:
    """The work folder of ``out``: ``OUT.partial`` beside it."""
    return out.with_name(f"{out.name}.partial")


def resolve_format(out: Path, fmt: str | None) -> str:
    """``parquet`` or ``zarr``: from ``fmt`` or the suffix; the suffix must agree."""
    fmt = fmt or ("zarr" if is_zarr(out) else "parquet")
    if fmt not in FORMATS:
        raise BadInputError(f"format {fmt!r} is not supported", f"use one of {FORMATS}")
    if (fmt == "zarr") != is_zarr(out):
        want = out.with_suffix(".zarr" if fmt == "zarr" else ".parquet").name
        raise BadInputError(
            f"--format {fmt} does not match the output name {out.name}",
            f"name the output {want} (readers pick the format by suffix)",
        )
    return fmt


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's name, arguments and every weight's bytes."""
    h = hashlib.sha256()
    card = getattr(model, "weights_card", {}) or {}
    name = getattr(model, "model_name", card.get("model_name"))
    kwargs = getattr(model, "model_kwargs", card.get("model_kwargs", {}))
    h.update(json.dumps([type(model).__name__, name, kwargs], sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}:{t.dtype}:{tuple(value.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def inputs_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of the ordered ids, paths and channels of the input list."""
    h = hashlib.sha256()
    for col in ("id", "paths", "channels"):
        values = df[col].astype(str).tolist() if col in df.columns else []
        h.update(json.dumps([col, values]).encode())
    return h.hexdigest()


def _load_inputs(source: Path, pattern: str) -> tuple[pd.DataFrame, Path | None]:
    from biofm.io.manifest import build_manifest, read_manifest

    if source.is_dir():
        df, root = build_manifest(source, pattern=pattern), None
    elif source.is_file():
        df, root = read_manifest(source), source.parent
    else:
        raise BadInputError(f"{source} does not exist", "pass a folder of images or a manifest CSV")
    if len(df) == 0:
        raise BadInputError(
            f"no images found in {source}",
            "check the folder, or pass --pattern to group channel files",
        )
    return ensure_ids(df), root


def _open_work(work: Path, state: dict[str, Any], restart: bool) -> None:
    if restart and work.exists():
        shutil.rmtree(work)
    if (work / STATE).is_file():
        old = json.loads((work / STATE).read_text())
        changed = [k for k in ("model", "inputs", "settings") if old.get(k) != state[k]]
        if changed:
            raise BadInputError(
                f"the unfinished run in {work} used a different {' and '.join(changed)}",
                "pass --restart to discard it and start over, or rerun with the original "
                "model, inputs and settings to finish it",
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    _atomic_write(work / STATE, lambda f: f.write(json.dumps(state, indent=2).encode()))


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _chunks(work: Path) -> list[Path]:
    return sorted(work.glob("chunk_*.npz"))


def _save_chunk(work: Path, parts: list[EmbeddedBatch], blocks: list[int]) -> None:
    done = [p for p in parts if p.ids]
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([i for p in done for i in p.ids], dtype=str),
        "skipped": np.array([i for p in parts for i in p.skipped], dtype=str),
    }
    if done:
        arrays["emb"] = np.concatenate([p.emb for p in done])
        for k in blocks:
            arrays[f"block_{k}"] = np.concatenate([p.blocks[k] for p in done])
    index = len(_chunks(work))
    savez: Any = np.savez
    _atomic_write(work / f"chunk_{index:06d}.npz", lambda f: savez(f, **arrays))


def _done_ids(work: Path) -> set[str]:
    done: set[str] = set()
    for path in _chunks(work):
        with np.load(path, allow_pickle=False) as z:
            done.update(z["ids"].tolist())
            done.update(z["skipped"].tolist())
    return done


def embed_path(
    model: nn.Module,
    source: Path,
    out: Path,
    cfg: EmbedConfig,
    pattern: str = "auto",
    fmt: str | None = None,
    blocks: str | list[int] | None = None,
    restart: bool = False,
    chunk_images: int = 1024,
    norm: NormSpec | None = None,
) -> EmbedSummary:
    """Embed a folder of images or a manifest CSV into ``out`` (parquet or ``.zarr``),
    resumably. ``blocks``: ``"all"``, ``"3,6,11"`` or a list for per-block features;
    ``chunk_images``: images per saved chunk (rounded up to whole batches); ``norm``: how
    intensities are scaled (default: statistics fitted on the input, per plate/source column
    when there is one), saved beside the output as ``OUT.norm.json``."""
    out = Path(out)
    fmt = resolve_format(out, fmt)
    if chunk_images < 1:
        raise BadInputError(f"chunk size {chunk_images}", "use at least 1 image per chunk")
    df, root = _load_inputs(Path(source), pattern)
    wanted = resolve_block_spec(model, blocks) or []
    work = work_dir(out)
    spec = norm or NormSpec()
    norm_cfg, stats = _input_norm(model, df, root, spec, work, restart)
    settings = {
        "tile": cfg.tile,
        "input_size": cfg.input_size,
        "max_tiles": cfg.max_tiles,
        "normalize": asdict(norm_cfg),
        "norm_stats": stats.to_dict() if stats else None,
        # what was asked for: a resumed run reuses its saved statistics, so changed options
        # must show here to be refused
        "norm_request": [spec.scope, spec.group_by, spec.fit_on, spec.stats_file is not None],
        "blocks": wanted,
    }
    state = {
        "model": model_fingerprint(model),
        "inputs": inputs_fingerprint(df),
        "settings": json.loads(json.dumps(settings, default=str)),
    }
    _open_work(work, state, restart)
    if stats is not None:
        stats.save(work / NORM_FILE)
    done = _done_ids(work)
    todo = by_channel_count(df[~df["id"].isin(done)])
    if done:
        log.info("resuming: %d of %d images already done in %s", len(done), len(df), work)
    parts: list[EmbeddedBatch] = []
    parts_iter = iter_embed(model, todo, cfg, norm_cfg, root, wanted, norm_stats=stats)
    for part in parts_iter if len(todo) else []:
        parts.append(part)
        if sum(len(p.ids) + len(p.skipped) for p in parts) >= chunk_images:
            _save_chunk(work, parts, wanted)
            parts = []
    if parts:
        _save_chunk(work, parts, wanted)
    summary = _assemble(work, out, df, fmt, wanted)
    summary.n_resumed = len(done)
    summary.norm_scope = norm_cfg.scope
    if stats is not None:
        summary.norm_file = stats.save(norm_path(out))
    shutil.rmtree(work)
    return summary


@dataclass(frozen=True)
class NormSpec:
    """How ``embed_path`` scales intensities: ``scope`` (image, source, reference; None =
    source), the ``group_by`` column, the rows to fit on (``fit_on``: "compound=DMSO"), or
    a saved ``stats_file`` (which sets the scope)."""

    scope: str | None = None
    group_by: str | None = None
    fit_on: str | None = None
    stats_file: str | Path | None = None


def norm_path(out: Path) -> Path:
    """Where the statistics an embedding used are saved: ``OUT.norm.json``."""
    return out.with_name(f"{out.name}.norm.json")


def _input_norm(model: nn.Module, df: pd.DataFrame, root: Path | None, spec: NormSpec,
                work: Path, restart: bool) -> tuple[NormalizeConfig, NormStats | None]:  # fmt: skip
    """The normalisation of this run: an unfinished run's saved statistics when resuming
    (so every chunk is scaled alike), else those of ``spec``."""
    card = dict(getattr(model, "weights_card", {}) or {})
    saved = work / NORM_FILE
    if not restart and spec.stats_file is None and saved.is_file() and spec.scope != "image":
        spec = NormSpec(stats_file=saved)
    cfg, stats = stats_for_input(df, card, scope=spec.scope, group_by=spec.group_by,
                                 fit_on=spec.fit_on, stats_file=spec.stats_file, root=root)
    if stats is not None:
        log.info("normalisation: %s", stats_summary(stats))
    return cfg, stats


def by_channel_count(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by their number of channels (stable): batches then hold few distinct
    counts, so the packed encoder runs fewer attention groups. The output keeps manifest
    order (rows are assembled by id)."""
    if "channels" not in df.columns:
        return df.reset_index(drop=True)
    counts = df["channels"].fillna("").astype(str).str.count(";") + 1
    order = order_by_channels(counts.tolist())
    return df.iloc[order].reset_index(drop=True)


def _assemble(work: Path, out: Path, df: pd.DataFrame, fmt: str, blocks: list[int]) -> EmbedSummary:
    """Write the chunks of ``work`` to ``out`` in manifest order."""
    order = {sid: i for i, sid in enumerate(df["id"])}
    done_ids: list[str] = []
    skipped: list[str] = []
    dim = 0
    block_dims: dict[int, int] = {}
    for path in _chunks(work):
        with np.load(path, allow_pickle=False) as z:
            done_ids += z["ids"].tolist()
            skipped += z["skipped"].tolist()
            if "emb" in z.files:
                dim = int(z["emb"].shape[1])
                block_dims = {k: int(z[f"block_{k}"].shape[1]) for k in blocks}
    if skipped:
        log.warning("%d images could not be embedded: %s", len(skipped), ", ".join(skipped[:20]))
    if not done_ids:
        raise BadInputError("no image could be embedded", "check the paths in the manifest")
    final = sorted(set(done_ids), key=order.__getitem__)
    pos = {sid: i for i, sid in enumerate(final)}
    by_id = rows_by_id(df)
    meta = pd.DataFrame([by_id[i] for i in final])
    if fmt == "zarr":
        with ZarrTableWriter(out, len(final), dim, meta, block_dims) as writer:
            for path in _chunks(work):
                _stream_chunk(path, pos, writer, blocks)
    else:
        emb = np.empty((len(final), dim), np.float32)
        per_block = {k: np.empty((len(final), d), np.float32) for k, d in block_dims.items()}
        for path in _chunks(work):
            with np.load(path, allow_pickle=False) as z:
                if "emb" not in z.files:
                    continue
                rows = [pos[i] for i in z["ids"].tolist()]
                emb[rows] = z["emb"]
                for k in blocks:
                    per_block[k][rows] = z[f"block_{k}"]
        write_embeddings(out, emb, meta, per_block)
    return EmbedSummary(len(final), dim, out, blocks, len(skipped))


def _stream_chunk(
    path: Path, pos: dict[str, int], writer: ZarrTableWriter, blocks: list[int]
) -> None:
    """Write one chunk's rows into the Zarr store, one contiguous run of rows at a time."""
    with np.load(path, allow_pickle=False) as z:
        if "emb" not in z.files:
            return
        rows = np.array([pos[i] for i in z["ids"].tolist()])
        sort = np.argsort(rows, kind="stable")
        rows = rows[sort]
        emb = z["emb"][sort]
        per_block = {k: z[f"block_{k}"][sort] for k in blocks}
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for seg in np.split(np.arange(len(rows)), breaks):
        writer.write(int(rows[seg[0]]), emb[seg], {k: v[seg] for k, v in per_block.items()})
