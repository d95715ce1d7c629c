"""Group files into fields: one field = one multichannel image (one file per channel, or one).

A pattern is a preset name or a regex ``fullmatch``-ed against each file name (against the
path relative to the indexed folder when it contains ``/``). ``(?P<channel>...)`` names the
channel; every other named group identifies the field and becomes a metadata column. Files
in different folders never share a field.

Presets: ``phenix``, ``w``, ``d`` (:data:`PRESETS`); ``suffix`` (channel = last ``_`` word,
``B7_01_1_3_DAPI_001.tif`` -> ``DAPI``; name parts that only change with the channel, such
as a channel index, are ignored); ``folders`` (one field per folder, file stem = channel);
``single`` (each file is a field holding all its channels); ``auto`` (the preset among
phenix/w/d/suffix explaining most files; files it leaves out become single-file fields;
``folders`` is never guessed). Channels sort naturally (ch2 < ch10). Fields lacking a
channel that others have are skipped with a warning listing them (``incomplete="skip"``),
raise (``"error"``) or are kept (``"keep"``).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

from biofm.core.errors import BadInputError
from biofm.io.images import IMAGE_SUFFIXES
from biofm.io.ome_zarr import is_ome_zarr

log = logging.getLogger(__name__)

Incomplete = Literal["skip", "error", "keep"]
DEFAULT_EXCLUDE: tuple[str, ...] = ("masks", "labels")
"""Folder/file name globs skipped while indexing (segmentation masks and label images)."""

_EXT = r"\.(?:tiff?|png)"
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PRESETS: dict[str, tuple[str, str | None]] = {
    # r01c01f01p01-ch2sk1fk1fl1.tiff (Opera/Operetta Phenix)
    "phenix": (
        r"r(?P<row>\d+)c(?P<col>\d+)f(?P<field>\d+)p(?P<plane>\d+)-(?P<channel>ch\d+)"
        r"sk(?P<timepoint>\d+)fk\d+fl\d+" + _EXT,
        "r{row}c{col}f{field}p{plane}sk{timepoint}",
    ),
    # PLATE_C16_w1_[GUID].tif, PLATE_a01_s1_w1<GUID>.tif (MetaXpress)
    "w": (
        r"(?P<plate>.+)_(?P<well>[a-p]\d{2})(?:_s(?P<site>\d+))?_(?P<channel>w\d{1,2})"
        r"(?:_?\[?" + _GUID + r"\]?)?" + _EXT,
        None,
    ),
    # AS_09125_050116030001_D03f00d0.tif (Cellomics / ImageXpress: well, field, channel)
    "d": (r"(?P<plate>.+)_(?P<well>[a-p]\d{2})f(?P<site>\d+)(?P<channel>d\d+)" + _EXT, None),
}
_SUFFIX = re.compile(r"(?P<stem>.+)_(?P<channel>[a-z]+\d*)(?:_\d+)?" + _EXT, re.IGNORECASE)
SPECIAL_PATTERNS = ("suffix", "folders", "single", "auto")
_AUTO_ORDER = ("phenix", "w", "d", "suffix")
_IGNORED_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".bmp", ".gif", ".czi", ".nd2", ".lif")


@dataclass
class FileField:
    """One field: ``files`` as (channel key, path) in channel order; key ``""`` = single file."""

    id: str
    files: list[tuple[str, Path]]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def single(self) -> bool:
        return len(self.files) == 1 and self.files[0][0] == ""


@dataclass
class Grouping:
    fields: list[FileField]
    unmatched: list[Path]
    pattern: str


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: digit runs compare as numbers (ch2 < ch10), letters case-insensitively."""
    parts = re.split(r"(\d+)", text)
    key = [(1, int(p)) if p.isdigit() else (0, p.lower()) for p in parts]
    return (*key, (0, text))


def list_image_files(
    folder: Path, *, recursive: bool = True, exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[Path]:
    """Image files (.tif/.tiff/.png) and OME-Zarr folders under ``folder``, sorted."""
    found: list[Path] = []
    ignored: list[str] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        for entry in sorted(current.iterdir(), reverse=True):
            rel = entry.relative_to(folder).as_posix()
            if entry.name.startswith(".") or any(
                fnmatch(entry.name, p) or fnmatch(rel, p) for p in exclude
            ):
                continue
            if entry.is_dir():
                if entry.suffix.lower() == ".zarr" or is_ome_zarr(entry):
                    found.append(entry)
                elif recursive:
                    stack.append(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                found.append(entry)
            elif entry.suffix.lower() in _IGNORED_IMAGE_SUFFIXES:
                ignored.append(rel)
    if ignored:
        log.warning("%d files in unsupported formats ignored: %s", len(ignored), ignored[:5])
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a preset name or a user regex; the regex must have a ``channel`` group."""
    if pattern in PRESETS:
        return re.compile(PRESETS[pattern][0], re.IGNORECASE)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise BadInputError(
            f"pattern {pattern!r} is neither a preset nor a valid regex ({err})",
            f"use a preset ({', '.join([*PRESETS, *SPECIAL_PATTERNS])}) or fix the regex",
        ) from err
    if "channel" not in regex.groupindex:
        raise BadInputError(
            f"pattern {pattern!r} has no (?P<channel>...) group",
            "add a named group 'channel' for the per-channel part of the name, or use "
            "--pattern single when each file holds all channels",
        )
    return regex


def group_files(
    files: Sequence[Path], root: Path, pattern: str = "auto", *, incomplete: Incomplete = "skip"
) -> Grouping:
    """Group ``files`` (under ``root``) into fields with ``pattern`` (see module docstring)."""
    if pattern == "auto":
        grouping = _auto(files, root)
    elif pattern == "single":
        grouping = Grouping([_single(f, root) for f in files], [], "single")
    elif pattern == "folders":
        grouping = _group_folders(files, root)
    elif pattern == "suffix":
        grouping = _group_suffix(files, root)
    else:
        template = PRESETS[pattern][1] if pattern in PRESETS else None
        grouping = _group_regex(files, root, compile_pattern(pattern), template, pattern)
    grouping.fields = _drop_incomplete(grouping.fields, incomplete)
    _make_ids_unique(grouping.fields)
    grouping.fields.sort(key=lambda f: natural_key(f.id))
    return grouping


def _auto(files: Sequence[Path], root: Path) -> Grouping:
    best: Grouping | None = None
    for name in _AUTO_ORDER:
        try:
            trial = group_files(files, root, name, incomplete="keep")
        except BadInputError as err:  # e.g. two files for one channel: not this preset
            log.debug("pattern %s does not fit: %s", name, err)
            continue
        if best is None or len(trial.unmatched) < len(best.unmatched):
            best = trial
    if best is None or len(best.unmatched) == len(files):
        return Grouping([_single(f, root) for f in files], [], "auto:single")
    singles = [_single(f, root) for f in best.unmatched]
    if singles:
        log.info(
            "pattern auto chose %s; %d files it does not explain become single-file fields: %s",
            best.pattern, len(singles), [s.id for s in singles[:5]],
        )
    return Grouping(best.fields + singles, [], f"auto:{best.pattern}")


def _folder_of(path: Path, root: Path) -> str:
    return path.relative_to(root).parent.as_posix()


def _with_folder(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


def _single(path: Path, root: Path) -> FileField:
    rel = path.relative_to(root)
    name = rel.name[: -len(rel.suffix)] if rel.suffix else rel.name
    return FileField(_with_folder(_folder_of(path, root), name), [("", path)])


def _collect(
    items: Iterable[tuple[Path, str, str, dict[str, str]]], root: Path, pattern: str
) -> list[FileField]:
    """Build fields from (path, channel, field name, meta) items sharing folder + meta."""
    by_key: dict[tuple[str, ...], FileField] = {}
    for path, channel, name, meta in items:
        folder = _folder_of(path, root)
        key = (folder, name, *(f"{k}={v}" for k, v in meta.items()))
        fid = name if folder == "." else (f"{folder}/{name}" if name else folder)
        fld = by_key.setdefault(key, FileField(fid, [], meta))
        clash = [p for c, p in fld.files if c == channel]
        if clash:
            raise BadInputError(
                f"two files for channel {channel!r} of field {fld.id!r}: {clash[0]}, {path}",
                "make the pattern tell the fields apart: add the differing part of the name "
                f"as a named group to --pattern (now {pattern!r})",
            )
        fld.files.append((channel, path))
    fields = list(by_key.values())
    for fld in fields:
        fld.files.sort(key=lambda item: natural_key(item[0]))
    return fields


def _group_regex(
    files: Sequence[Path], root: Path, regex: re.Pattern[str], template: str | None, name: str
) -> Grouping:
    by_path = "/" in regex.pattern
    items: list[tuple[Path, str, str, dict[str, str]]] = []
    unmatched: list[Path] = []
    for path in files:
        m = regex.fullmatch(path.relative_to(root).as_posix() if by_path else path.name)
        if m is None or not m.group("channel"):
            unmatched.append(path)
            continue
        meta = {k: v for k, v in m.groupdict().items() if k != "channel" and v is not None}
        _derive_well(meta)
        fid = template.format(**meta) if template else "_".join(meta.values())
        items.append((path, m.group("channel"), fid or root.name, meta))
    return Grouping(_collect(items, root, name), unmatched, name)


def _derive_well(meta: dict[str, str]) -> None:
    """Add ``well`` (e.g. C03) from numeric ``row``/``col`` groups when the name lacks one."""
    row, col = meta.get("row", ""), meta.get("col", "")
    if "well" not in meta and row.isdigit() and col.isdigit() and 1 <= int(row) <= 26:
        meta["well"] = f"{chr(64 + int(row))}{int(col):02d}"


def _group_folders(files: Sequence[Path], root: Path) -> Grouping:
    items: list[tuple[Path, str, str, dict[str, str]]] = []
    for path in files:
        folder = _folder_of(path, root)
        channel = re.sub(r"\.ome$", "", path.stem, flags=re.IGNORECASE)
        items.append((path, channel, root.name if folder == "." else "", {}))
    return Grouping(_collect(items, root, "folders"), [], "folders")


def _group_suffix(files: Sequence[Path], root: Path) -> Grouping:
    parsed: list[tuple[Path, str, list[str]]] = []
    unmatched: list[Path] = []
    for path in files:
        m = _SUFFIX.fullmatch(path.name)
        if m is None:
            unmatched.append(path)
        else:
            parsed.append((path, m.group("channel"), m.group("stem").split("_")))
    drop = _channel_bound_positions(parsed)
    items = []
    for path, channel, tokens in parsed:
        kept = [tok for i, tok in enumerate(tokens) if i not in drop.get(len(tokens), set())]
        stem = "_".join(kept)
        items.append((path, channel, stem, {"stem": stem}))
    return Grouping(_collect(items, root, "suffix"), unmatched, "suffix")


def _channel_bound_positions(parsed: list[tuple[Path, str, list[str]]]) -> dict[int, set[int]]:
    """Token positions (per token count) whose value is fixed by the channel and varies
    across channels, such as the channel index in ``B7_01_1_3_DAPI``: not part of the field."""
    values: dict[tuple[int, int], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for _, channel, tokens in parsed:
        for i, tok in enumerate(tokens):
            values[(len(tokens), i)][channel].add(tok)
    drop: dict[int, set[int]] = defaultdict(set)
    for (count, i), per_channel in values.items():
        one_each = all(len(v) == 1 for v in per_channel.values())
        if one_each and len(set().union(*per_channel.values())) > 1:
            drop[count].add(i)
    return drop


def _drop_incomplete(fields: list[FileField], incomplete: Incomplete) -> list[FileField]:
    multi = [f for f in fields if not f.single]
    every = set().union(*({c for c, _ in f.files} for f in multi)) if multi else set()
    lacking = {f.id: sorted(every - {c for c, _ in f.files}) for f in multi}
    lacking = {k: v for k, v in lacking.items() if v}
    if not lacking or incomplete == "keep":
        return fields
    listing = "; ".join(f"{k} (missing {', '.join(v)})" for k, v in list(lacking.items())[:10])
    if incomplete == "error":
        raise BadInputError(
            f"{len(lacking)} fields lack channels that other fields have: {listing}",
            "add the missing files, or pass incomplete='skip' (CLI: --incomplete skip)",
        )
    log.warning("skipped %d fields lacking channels others have: %s", len(lacking), listing)
    return [f for f in fields if f.id not in lacking]


def _make_ids_unique(fields: list[FileField]) -> None:
    seen: dict[str, int] = {}
    for fld in fields:
        n = seen.get(fld.id, 0)
        seen[fld.id] = n + 1
        if n:
            fld.id = f"{fld.id}~{n + 1}"
