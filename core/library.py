"""The library: the one writer of everything a space holds (rows, original files, indexes, previews)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.audio import Limits, decode, export_preview
from core.budget import Budget, decoded_bytes
from core.errors import NotFound
from core.files import FileStore
from core.index import IndexSet
from core.previews import Previews
from core.prints import PrintSet
from core.store import Change, NewSample, SampleRow, Store

if TYPE_CHECKING:
    from core.fingerprint import Fingerprint

log = logging.getLogger(__name__)


class Library:
    """Changes a library only under one lock, each step atomic or repairable; readers call ensure_index first."""

    def __init__(
        self,
        store: Store,
        files: FileStore,
        indexes: IndexSet,
        previews: Previews,
        preview_limits: Limits,
        budget: Budget | None = None,
    ) -> None:
        self.store = store
        self.budget = budget
        self.files = files
        self.indexes = indexes
        self.previews = previews
        self.preview_limits = preview_limits
        self.prints = PrintSet()
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- indexes

    async def load_indexes(self) -> None:
        """Load each space's saved index, catching up one that is behind, rebuilding one that is missing."""
        async with self._lock:
            for space in await self.store.spaces():
                if self.indexes.load_saved(space, await self.store.revision(space)) is None:
                    await self._rebuild(space)
                else:
                    await self._catch_up(space)

    async def ensure_index(self, space: str) -> None:
        """Bring a space's index up to the store: another process may have changed the space."""
        if self.indexes.revision(space) == await self.store.revision(space):
            return
        async with self._lock:
            if self.indexes.revision(space) != await self.store.revision(space):
                await self._catch_up(space)

    async def _catch_up(self, space: str) -> None:
        """Apply the store's change log to a loaded index; rebuild when there is none or the log can't tell."""
        revision = self.indexes.revision(space)
        if revision is not None:
            changes = await self.store.changes_since(space, revision)
            if changes is not None and self.indexes.catch_up(space, changes):
                if changes.revision != revision:
                    log.info("caught %s up from rev %d to %d", space, revision, changes.revision)
                return
        await self._rebuild(space)

    async def _rebuild(self, space: str) -> None:
        """Rebuild from one consistent read of the space (caller holds the lock)."""
        if self.indexes.dim is None and (dim := await self.store.get_meta("embedding_dim")) is not None:
            self.indexes.dim = int(dim)
        revision, ids, vectors = await self.store.snapshot(space)
        await asyncio.to_thread(self.indexes.rebuild, space, ids, vectors, revision)

    async def ensure_prints(self, space: str) -> None:
        """Bring a space's fingerprint index up to the store."""
        if self.prints.fresh(space, await self.store.revision(space), await self.store.fingerprint_count(space)):
            return
        async with self._lock:
            revision, rows = await self.store.fingerprints(space)
            if not self.prints.fresh(space, revision, len(rows)):
                await asyncio.to_thread(self.prints.rebuild, space, revision, rows)

    async def flush(self) -> None:
        """Save every changed index."""
        async with self._lock:
            for space in self.indexes.dirty():
                await asyncio.to_thread(self.indexes.save, space)

    # ----------------------------------------------------------------- changes

    async def add(self, sample: NewSample, data: bytes, fp: Fingerprint | None = None) -> Change:
        """Store the file and commit the row in one step; a failure after the commit is repaired, not reported."""

        async def store_file(row: NewSample) -> NewSample:
            stored = await asyncio.to_thread(self.files.put, data, row.sha256, row.ext)
            return dataclasses.replace(row, ext=stored.suffix)  # one file per hash, whatever the upload was called

        async with self._lock:
            change = await self.store.add_sample(sample, store_file)
            if not change.duplicate:
                space = sample.space
                await self._apply(
                    space, change, lambda: self.indexes.add(space, change.sample_id, sample.vector, change.revision)
                )
                if fp is None or not self.prints.add(space, change.sample_id, fp, change.revision):
                    self.prints.forget(space)
        return change

    async def remove(self, space: str, sample_id: int) -> SampleRow:
        """Delete a sample, then sweep its file and previews if nothing else refers to them."""
        async with self._lock:
            row = await self.store.get_sample(sample_id)
            change = await self.store.remove_sample(sample_id) if row is not None and row.space == space else None
            if row is None or change is None:
                raise NotFound(f"There is no sound #{sample_id} in this library.")
            await self._apply(space, change, lambda: self.indexes.remove(space, sample_id, change.revision))
            if not self.prints.remove(space, sample_id, change.revision):
                self.prints.forget(space)
        await self.sweep([row.sha256])
        return row

    async def _apply(self, space: str, change: Change, step: Callable[[], bool]) -> None:
        """Apply a committed change to the in-memory index; out of step or failing, rebuild it later instead."""
        try:
            if space not in self.indexes.entries:
                await self._rebuild(space)  # includes the change
            elif not step():  # another process changed the space since: the log has its changes and this one
                await self._catch_up(space)
            elif self.indexes.needs_rebuild(space):
                await self._rebuild(space)
        except Exception:
            log.exception("index update of %s failed after commit (rev %d); it will be rebuilt", space, change.revision)
            self.indexes.forget(space)

    async def sweep(self, shas: list[str] | None = None) -> set[str]:
        """Delete original files and previews that no sample refers to (all of them when shas is None)."""
        if shas is None:
            shas = sorted(set(self.files.all()) | self.previews.referenced())
            await asyncio.to_thread(self.files.sweep_parts)

        async def delete(unused: set[str]) -> None:
            for sha in unused:
                await asyncio.to_thread(self.files.delete, sha)
                await asyncio.to_thread(self.previews.delete, [sha])

        unused = await self.store.sweep(shas, delete)
        if unused:
            log.info("swept %d unreferenced file(s)", len(unused))
        return unused

    async def backfill_prints(self, batch: int = 32) -> int:
        """Fingerprint samples stored before fingerprints (or their parameters' version) existed; resumable."""
        from core.fingerprint import HEADER, Fingerprint, fingerprint, to_blob

        done = 0
        while rows := await self.store.without_fingerprints(batch, HEADER):
            for row in rows:
                try:
                    original = self.files.path(row.sha256, row.ext)
                    data = await asyncio.to_thread(original.read_bytes)
                    audio = await asyncio.to_thread(decode, data, self.preview_limits)
                    fp = await asyncio.to_thread(fingerprint, audio.samples)
                except Exception as exc:  # an unreadable original: store an empty print so it isn't retried forever
                    log.warning("could not fingerprint #%d (%s): %s", row.id, row.name, exc)
                    fp = Fingerprint(np.zeros(0, np.uint32), np.zeros(0, np.uint32))
                async with self._lock:
                    if await self.store.set_fingerprint(row.id, to_blob(fp)):
                        self.prints.backfilled(row.space, row.id, fp)
                done += 1
        if done:
            log.info("fingerprinted %d older sample(s)", done)
        return done

    async def move_space(self, old: str, new: str) -> int:
        """Carry a library over to a new space key (merging into it if it has sounds); idempotent."""
        if old == new:
            return 0
        async with self._lock:
            moved = await self.store.rename_space(old, new)
            self.indexes.drop(old)
            self.indexes.forget(new)  # rebuilt from the store on next use
        if moved:
            log.info("moved %d sound(s) from %s to %s", moved, old, new)
        return moved

    async def remember_file_id(self, sample_id: int, platform: str, file_id: str) -> None:
        """Store a platform's reusable handle for a sample."""
        await self.store.set_file_id(sample_id, platform, file_id)

    async def add_label(self, space: str, label: str) -> None:
        """Add a label to a space's own vocabulary."""
        await self.store.add_space_label(space, label)

    async def remove_label(self, space: str, label: str) -> bool:
        """Remove a label from a space's own vocabulary; False if it was not there."""
        return await self.store.remove_space_label(space, label)

    # ----------------------------------------------------------------- derived files

    async def preview(self, row: SampleRow, fmt: str, max_bytes: int) -> Path:
        """A playable preview of a sample that fits max_bytes, encoded once however many ask at the same time."""

        async def make(path: Path) -> Path:
            original = self.files.path(row.sha256, row.ext)
            if self.budget is None:
                return await encode(original, path)
            # The file, its decoded samples and, while encoding, about twice as much again, and the preview.
            need = original.stat().st_size + 3 * decoded_bytes(row.duration) + max_bytes
            async with self.budget.hold(need):  # Busy when full: a chat request doesn't wait for memory
                return await encode(original, path)

        async def encode(original: Path, path: Path) -> Path:
            data = await asyncio.to_thread(original.read_bytes)
            audio = await asyncio.to_thread(decode, data, self.preview_limits)
            del data
            return await asyncio.to_thread(export_preview, audio, path, fmt, max_bytes)

        return await self.previews.get(row.sha256, fmt, max_bytes, make)
