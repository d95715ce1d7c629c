"""ChannelVocab: free-text channel names -> canonical stains (placeholder, being filled in)."""

from __future__ import annotations

from collections.abc import Iterable

CANONICAL: tuple[str, ...] = ("unknown", "DNA", "ER", "RNA", "AGP", "Mito", "brightfield")


class ChannelVocab:
    def __init__(self, names: Iterable[str] = CANONICAL) -> None:
        self.names = tuple(names)
        self._index = {n.lower(): i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def canonical(self, name: str | None) -> str:
        return self.names[self.id(name)]

    def id(self, name: str | None) -> int:
        if name is None:
            return 0
        return self._index.get(str(name).strip().lower(), 0)

    def ids(self, names: Iterable[str | None]) -> list[int]:
        return [self.id(n) for n in names]


DEFAULT_VOCAB = ChannelVocab()
