"""ChannelVocab: free-text channel names (as acquired) -> canonical stains.

``CANONICAL`` is part of the model format: a model stores channel *ids* (positions in this
tuple), so the order is append-only. Never reorder, rename or remove an entry; add new stains
at the end and bump ``VOCAB_VERSION``. Index 0 is always ``"unknown"``.

Matching is deterministic and ordered (first rule that fires wins):

1. user synonyms, then an exact match against the vocab's own names and a short table of
   whole names (``ERSyto`` -> ER, ``ERSytoBleed`` -> RNA, ``R``/``G``/``B`` -> RGB planes...);
2. an imaging modality anywhere in the name (``bf:brightfield``, ``dic: whole cell``);
3. a fluorescent-protein fusion ``GENE-FP``: the gene decides (``H2B-mCherry`` -> DNA,
   ``Sac6-tdTomato`` -> protein);
4. the stain rules on the target part of an IDR-style ``fluorophore:target`` string, then on
   the whole string;
5. ``fluorophore:something-else`` (``alexa 568:caspase-3``) -> protein; else ``unknown``.

Text is compared as lower-case alphanumeric tokens, letters and digits split apart, so case,
spacing and punctuation do not matter (``Hoechst33342`` == ``hoechst 33342``).

Decisions:
- AGP (actin, Golgi, plasma membrane) takes phalloidin, WGA, F-actin and Golgi markers, also
  outside Cell Painting: there is no separate actin stain.
- A fluorophore alone (``GFP``, ``RFP``, ``Cy3``, ``Alexa 488``) names a colour, not a
  structure, and maps to ``unknown`` (in the NF1 Cell Painting plate ``GFP`` images the ER).
  ``protein`` needs a hint: a fusion, "tagged", "protein", "anti-", or a named target.
- ``rgb_red``/``rgb_green``/``rgb_blue`` are colour-camera planes (histology, RGB PNG) and
  match only names that are exactly a colour (``red``, ``R``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from biofm.core.errors import BadInputError

log = logging.getLogger(__name__)

VOCAB_VERSION = "1"

# Append-only (see module docstring).
CANONICAL: tuple[str, ...] = (
    "unknown", "DNA", "ER", "RNA", "AGP", "Mito", "brightfield", "phase", "darkfield", "DIC",
    "tubulin", "membrane", "cytoplasm", "extracellular", "protein", "mitosis", "DNA_damage",
    "EdU", "rgb_red", "rgb_green", "rgb_blue",
)  # fmt: skip

_MODALITY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("brightfield", ("brightfield", "bright field", "bf", "transmitted", "highzbf", "lowzbf")),
    ("phase", ("phase contrast", "phase")),
    ("darkfield", ("darkfield", "dark field")),
    ("DIC", ("dic", "differential interference contrast", "nomarski")),
)

_STAIN_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mitosis", ("phosphohistone", "phospho histone", "ph3", "phh3", "ser10", "mitotic")),
    ("DNA_damage", ("h2ax", "gammah2ax", "53bp1", "dna damage")),
    ("EdU", ("edu", "brdu")),
    ("RNA", ("ersytobleed", "syto14", "syto 14", "nucleoli", "nucleolus", "rna")),
    ("ER", ("ersyto", "concanavalin", "con a", "cona", "endoplasmic", "reticulum", "er")),
    ("Mito", ("mitotracker", "mitochondria", "mitochondrial", "mito", "tmrm", "tmre")),
    ("DNA", (
        "dna", "hoechst", "hoescht", "dapi", "draq5", "draq7", "h2b", "histone 2b", "nuclei",
        "nucleus", "nuclear stain", "chromatin", "chromosome", "chromosomes", "propidium",
    )),
    ("AGP", (
        "agp", "phalloidin", "phallodin", "wga", "wheat germ agglutinin", "actin", "golgi",
        "lifeact",
    )),
    ("tubulin", ("tubulin", "alphatubulin", "microtubule", "microtubules")),
    ("membrane", ("cellmask", "membrane", "red blood cell", "erythrocyte")),
    ("cytoplasm", (
        "cytoplasm", "cytosol", "cytosolic", "whole cell", "cell body", "cell bodies",
        "celltracker", "cfse",
    )),
    ("extracellular", ("growth media", "growth medium", "medium", "media", "dextran")),
    ("protein", ("protein", "tagged", "antibody", "anti")),
)  # fmt: skip

_FLUOROPHORES: tuple[str, ...] = (
    "gfp", "egfp", "yegfp", "sfgfp", "emgfp", "yfp", "eyfp", "tagyfp", "venus", "citrine",
    "rfp", "mrfp", "tagrfp", "cfp", "ecfp", "bfp", "tagbfp", "mcherry", "tdtomato", "mkate",
    "mscarlet", "mneongreen", "dsred", "alexa", "alexafluor", "af", "fitc", "tritc", "tirtc",
    "cy2", "cy3", "cy5", "cy7", "atto", "dylight", "texas red",
)  # fmt: skip

_FP = r"(?:[a-z]{0,3}(?:gfp|yfp|rfp|cfp|bfp)|mcherry|tdtomato|mkate|mscarlet|mneongreen|venus)"
_FUSION = re.compile(rf"\b([a-z0-9]+)\s*-\s*{_FP}[0-9]*\b|\b{_FP}[0-9]*\s*-\s*([a-z][a-z0-9]*)")

# Whole names (token form) that the rules would miss or get wrong.
_EXACT: dict[str, str] = {
    "ersyto": "ER", "ersytobleed": "RNA", "r": "rgb_red", "red": "rgb_red",
    "g": "rgb_green", "green": "rgb_green", "b": "rgb_blue", "blue": "rgb_blue",
    "origdna": "DNA", "origer": "ER", "origrna": "RNA", "origagp": "AGP", "origmito": "Mito",
    "origbrightfield": "brightfield",
}  # fmt: skip

_GREEK = {"γ": "gamma", "α": "alpha", "β": "beta"}


def normalize(text: str) -> str:
    """Token form: lower case, Greek letters spelled out, letters and digits split apart."""
    s = str(text).lower()
    for letter, word in _GREEK.items():
        s = s.replace(letter, f" {word}")
    return " ".join(re.findall(r"[a-z]+|[0-9]+", s))


def _compile(
    rules: tuple[tuple[str, tuple[str, ...]], ...],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((stain, tuple(f" {normalize(k)} " for k in keys)) for stain, keys in rules)


_MODALITY = _compile(_MODALITY_RULES)
_STAINS = _compile(_STAIN_RULES)
_FLUORS = tuple(f" {normalize(f)} " for f in _FLUOROPHORES)
_CANONICAL_TOKENS = {normalize(c): c for c in CANONICAL}


def _first(rules: tuple[tuple[str, tuple[str, ...]], ...], tokens: str) -> str | None:
    padded = f" {tokens} "
    for stain, keys in rules:
        if any(k in padded for k in keys):
            return stain
    return None


def _names_fluorophore(tokens: str) -> bool:
    padded = f" {tokens} "
    if any(f in padded for f in _FLUORS):
        return True
    return any(t.isdigit() and 350 <= int(t) <= 800 for t in tokens.split())


def classify(name: str) -> str:
    """Canonical stain of a free-text channel name under the default rules (see module doc)."""
    whole = normalize(name)
    if not whole:
        return "unknown"
    exact = _EXACT.get(whole) or _CANONICAL_TOKENS.get(whole)
    if exact:
        return exact
    found = _first(_MODALITY, whole)
    if found:
        return found
    raw = str(name).lower()
    fusion = _FUSION.search(raw)
    if fusion:
        gene = normalize(fusion.group(1) or fusion.group(2))
        return _first(_STAINS, gene) or "protein"
    head, sep, target = raw.partition(":")
    found = (_first(_STAINS, normalize(target)) if sep else None) or _first(_STAINS, whole)
    if found:
        return found
    if sep and normalize(target) and _names_fluorophore(normalize(head)):
        return "protein"
    return "unknown"


class ChannelVocab:
    """Maps free-text channel names to ids of canonical stains; unrecognised -> 0 (unknown).

    ``names`` are the stains a model knows (index = id; ``names[0]`` must be ``"unknown"``).
    ``synonyms`` maps extra free-text names to one of ``names`` and takes precedence over the
    built-in rules. A rule result missing from ``names`` (an older, shorter vocab) is unknown.
    """

    def __init__(
        self,
        names: Iterable[str] = CANONICAL,
        synonyms: Mapping[str, str] | None = None,
        version: str = VOCAB_VERSION,
    ) -> None:
        self.names: tuple[str, ...] = tuple(str(n) for n in names)
        self.version = str(version)
        _check_names(self.names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._by_token = {normalize(n): i for i, n in enumerate(self.names)}
        self.synonyms: dict[str, str] = dict(synonyms or {})
        self._synonym_ids: dict[str, int] = {}
        for raw, target in self.synonyms.items():
            if target not in self._index:
                raise BadInputError(
                    f"synonym {raw!r} points at {target!r}, which is not a vocab name",
                    f"use one of {list(self.names)}",
                )
            self._synonym_ids[normalize(raw)] = self._index[target]
        self._cache: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelVocab):
            return NotImplemented
        return (self.names, self.synonyms) == (other.names, other.synonyms)

    def __hash__(self) -> int:
        return hash((self.names, tuple(sorted(self.synonyms.items()))))

    def __repr__(self) -> str:
        return f"ChannelVocab({len(self.names)} names, {len(self.synonyms)} synonyms)"

    def canonical(self, name: str | None) -> str:
        """Canonical stain name of ``name`` (``"unknown"`` when unrecognised)."""
        return self.names[self.id(name)]

    def id(self, name: str | None) -> int:
        """Id of ``name``'s canonical stain; ``None``, empty or unrecognised -> 0."""
        if name is None:
            return 0
        key = str(name)
        if key not in self._cache:
            self._cache[key] = self._lookup(key)
        return self._cache[key]

    def ids(self, names: Iterable[str | None]) -> list[int]:
        return [self.id(n) for n in names]

    def _lookup(self, name: str) -> int:
        tokens = normalize(name)
        if not tokens:
            return 0
        if tokens in self._synonym_ids:
            return self._synonym_ids[tokens]
        if tokens in self._by_token:
            return self._by_token[tokens]
        return self._index.get(classify(name), 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for a weights card."""
        return {"version": self.version, "names": list(self.names), "synonyms": dict(self.synonyms)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChannelVocab:
        """Inverse of :meth:`to_dict`."""
        names = d.get("names") if isinstance(d, Mapping) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadInputError(
                "channel vocab has no 'names' list of strings",
                "pass the dict written by ChannelVocab.to_dict()",
                where="channel_vocab",
            )
        version = str(d.get("version", VOCAB_VERSION))
        if version != VOCAB_VERSION:
            log.warning(
                "channel vocab version %s differs from this library's rules (%s): ids keep "
                "their meaning, names may map slightly differently",
                version,
                VOCAB_VERSION,
            )
        synonyms = d.get("synonyms") or {}
        if not isinstance(synonyms, Mapping):
            raise BadInputError(
                "channel vocab 'synonyms' is not a mapping",
                "store synonyms as {free-text name: canonical name}",
                where="channel_vocab",
            )
        return cls(names, synonyms=synonyms, version=version)


def _check_names(names: tuple[str, ...]) -> None:
    if not names or names[0] != "unknown":
        raise BadInputError(
            f"vocab names must start with 'unknown', got {list(names[:3])}",
            "put 'unknown' first (id 0) and keep the order of CANONICAL",
        )
    if len(set(names)) != len(names):
        raise BadInputError("vocab names repeat", "give each canonical stain once")


DEFAULT_VOCAB = ChannelVocab()
