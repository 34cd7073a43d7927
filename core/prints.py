"""Per-space fingerprint indexes in memory: derived caches of the store's fingerprints, like the FAISS indexes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.fingerprint import Fingerprint, FingerprintIndex, Match


@dataclass
class _Entry:
    index: FingerprintIndex
    revision: int  # the space's revision the index reflects
    count: int  # fingerprints the store holds for it (a backfill adds some without changing the revision)
    stale: set[int] = field(default_factory=set)  # samples whose stored blob is of older parameters: not indexed


class PrintSet:
    """The fingerprint index of each space in use, kept in step by revision and count."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def fresh(self, space: str, revision: int, count: int) -> bool:
        """Whether the space's index reflects the store at this revision and fingerprint count."""
        entry = self.entries.get(space)
        return entry is not None and (entry.revision, entry.count) == (revision, count)

    def rebuild(self, space: str, revision: int, rows: list[tuple[int, bytes]]) -> None:
        """Build a space's index from the store's fingerprint blobs (older parameters' wait for the backfill)."""
        from core.fingerprint import FingerprintIndex, from_blob, is_current

        index, stale = FingerprintIndex(), set()
        for sample_id, blob in rows:
            if is_current(blob):
                index.add(sample_id, from_blob(blob))
            else:
                stale.add(sample_id)
        self.entries[space] = _Entry(index, revision, len(rows), stale)

    def add(self, space: str, sample_id: int, fp: Fingerprint, revision: int) -> bool:
        """Apply one committed addition; False if the index is out of step (the caller rebuilds)."""
        entry = self.entries.get(space)
        if entry is None or entry.revision != revision - 1:
            return False
        entry.index.add(sample_id, fp)
        entry.revision, entry.count = revision, entry.count + 1
        return True

    def remove(self, space: str, sample_id: int, revision: int) -> bool:
        """Apply one committed removal; False if the index is out of step."""
        entry = self.entries.get(space)
        if entry is None or entry.revision != revision - 1:
            return False
        held = sample_id in entry.index
        entry.index.remove(sample_id)
        entry.revision, entry.count = revision, entry.count - held
        return True

    def backfilled(self, space: str, sample_id: int, fp: Fingerprint) -> None:
        """Apply a fingerprint stored for an older sample, or in place of a stale one (no revision change)."""
        entry = self.entries.get(space)
        if entry is None:
            return
        if sample_id in entry.stale:
            entry.stale.discard(sample_id)
            entry.index.add(sample_id, fp)
        elif sample_id not in entry.index:
            entry.index.add(sample_id, fp)
            entry.count += 1

    def forget(self, space: str) -> None:
        """Drop a space's index, so the next use rebuilds it."""
        self.entries.pop(space, None)

    def match(self, spaces: tuple[str, ...], query: Fingerprint, top: int = 5) -> list[Match]:
        """The best aligned matches across these spaces, best first."""
        found = [m for space in spaces if (e := self.entries.get(space)) for m in e.index.match(query, top)]
        return sorted(found, key=lambda m: (-m.confidence, -m.votes, m.sample_id))[:top]
