"""SQLite metadata store (aiosqlite, WAL): the source of truth for samples, vectors and tags."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosqlite
import numpy as np

from core import changes
from core.changes import ChangeSet
from core.schema import MIGRATIONS

log = logging.getLogger(__name__)


QUERY_SECONDS = 7 * 24 * 3600.0  # a search can be paged through for a week
QUERY_ROWS = 10_000  # the most searches kept; the oldest go first


@dataclass(frozen=True)
class SampleRow:
    """One stored sample."""

    id: int
    space: str
    sha256: str
    ext: str
    name: str
    uploader: str
    description: str
    duration: float
    created_at: float
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """A committed addition or removal, with the space revision it produced."""

    sample_id: int
    revision: int
    sha256: str
    duplicate: bool = False  # an addition that found this exact file already stored (by another writer)


@dataclass(frozen=True)
class NewSample:
    """Everything needed to store one addition in one transaction."""

    space: str
    sha256: str
    ext: str
    name: str
    uploader: str
    description: str
    duration: float
    source: str
    vector: np.ndarray  # normalised mean of the windows
    segments: tuple[tuple[float, float, np.ndarray], ...]
    tags: tuple[tuple[str, float | None, bool], ...] = ()  # (tag, score, auto)
    platform: str = ""
    platform_file_id: str | None = None
    fingerprint: bytes | None = None  # core.fingerprint.to_blob of the whole sound


@dataclass(frozen=True)
class SavedQuery:
    """A search kept for paging: its spaces, vector and, for text searches, the words."""

    spaces: tuple[str, ...]
    vector: np.ndarray
    text: str
    k: int
    title: str
    exclude: int | None = None  # a sample left out ("more like this" one)


def to_blob(vector: np.ndarray) -> bytes:
    """A vector as a float32 blob."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """A float32 blob as a vector."""
    return np.frombuffer(blob, dtype="<f4")


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 query: each word quoted, any word may match."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words[:32])


LEXICAL_WINDOW = 200  # lexical(): matches ranked before their spaces are checked (see there)


def fts_text(value: str) -> str:
    """Make file names searchable word by word."""
    return re.sub(r"[_\-.]+", " ", value)


class Store(Protocol):
    """What the engine needs from a metadata store; SqliteStore is the embedded default.

    core.pgstore.PostgresStore, for several processes on several machines, implements these and nothing else.
    Every revision of a space has one change log entry (core/changes.py), which changes_since reads back.
    """

    async def close(self) -> None: ...
    async def spaces(self) -> list[str]: ...
    async def revision(self, space: str) -> int: ...
    async def count(self, space: str) -> int: ...
    async def stats(self, space: str) -> tuple[int, float, int]: ...
    async def add_sample(
        self, sample: NewSample, prepare: Callable[[NewSample], Awaitable[NewSample]] | None = None
    ) -> Change: ...
    async def remove_sample(self, sample_id: int) -> Change | None: ...
    async def sweep(self, shas: Iterable[str], delete: Callable[[set[str]], Awaitable[None]]) -> set[str]: ...
    async def find_by_sha(self, space: str, sha256: str) -> int | None: ...
    async def sha_in_use(self, sha256: str) -> bool: ...
    async def snapshot(self, space: str) -> tuple[int, np.ndarray, np.ndarray]: ...
    async def get_sample(self, sample_id: int) -> SampleRow | None: ...
    async def get_samples(self, ids: list[int]) -> dict[int, SampleRow]: ...
    async def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]: ...
    async def sample_vectors(self, ids: list[int]) -> dict[int, np.ndarray]: ...
    async def fingerprints(self, space: str) -> tuple[int, list[tuple[int, bytes]]]: ...
    async def set_fingerprint(self, sample_id: int, data: bytes) -> bool: ...
    async def fingerprint_count(self, space: str) -> int: ...
    async def without_fingerprints(self, limit: int, current: bytes = b"") -> list[SampleRow]: ...
    async def segments(self, ids: list[int]) -> dict[int, list[tuple[float, float, np.ndarray]]]: ...
    async def lexical(self, spaces: list[str], query: str, limit: int) -> list[int]: ...
    async def file_ids(self, ids: list[int], platform: str) -> dict[int, str]: ...
    async def set_file_id(self, sample_id: int, platform: str, file_id: str) -> None: ...
    async def space_labels(self, space: str) -> list[str]: ...
    async def add_space_label(self, space: str, label: str) -> None: ...
    async def remove_space_label(self, space: str, label: str) -> bool: ...
    async def cached_texts(self, model: str, texts: list[str]) -> dict[str, np.ndarray]: ...
    async def cache_texts(self, model: str, vectors: dict[str, np.ndarray]) -> None: ...
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...
    async def save_query(self, query_id: str, query: SavedQuery) -> None: ...
    async def load_query(self, query_id: str) -> SavedQuery | None: ...
    async def rename_space(self, old: str, new: str) -> int: ...
    async def changes_since(self, space: str, revision: int) -> ChangeSet | None: ...


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._space_ids: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one connection: writes from concurrent tasks must not interleave

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block as one write transaction, serialised with every other write."""
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open (creating and migrating) the database file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db, path)
        await store._migrate()
        return store

    async def close(self) -> None:
        """Close the connection."""
        await self.db.close()

    async def _migrate(self) -> None:
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema v{version}, newer than this shira (v{len(MIGRATIONS)})")
        # Foreign keys are off while migrating, as SQLite's table-rebuild procedure asks: dropping a parent table
        # would otherwise cascade into its children. The check below proves nothing was left dangling.
        await self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("migrating %s to schema v%d", self.path, number)
                async with self._transaction() as db:
                    for statement in (s for s in script.split(";") if s.strip()):
                        await db.execute(statement)
                    if await (await db.execute("PRAGMA foreign_key_check")).fetchone() is not None:
                        raise RuntimeError(f"migrating {self.path} to v{number} left rows without their parents")
                    await db.execute(f"PRAGMA user_version={number}")
        finally:
            await self.db.execute("PRAGMA foreign_keys=ON")

    async def schema_version(self) -> int:
        """The database's schema version."""
        (version,) = await (await self.db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        return int(version)

    async def _space_id(self, key: str, create: bool = True) -> int | None:
        if key in self._space_ids:
            return self._space_ids[key]
        row = await (await self.db.execute("SELECT id FROM spaces WHERE key = ?", (key,))).fetchone()
        if row is None:
            if not create:
                return None
            async with self._transaction() as db:
                await db.execute(
                    "INSERT INTO spaces (key, created_at) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, time.time())
                )
            row = await (await self.db.execute("SELECT id FROM spaces WHERE key = ?", (key,))).fetchone()
        self._space_ids[key] = int(row["id"])  # type: ignore[index]
        return self._space_ids[key]

    async def spaces(self) -> list[str]:
        """Every space key."""
        rows = await (await self.db.execute("SELECT key FROM spaces ORDER BY id")).fetchall()
        return [r["key"] for r in rows]

    async def add_sample(
        self, sample: NewSample, prepare: Callable[[NewSample], Awaitable[NewSample]] | None = None
    ) -> Change:
        """Insert a sample with its segments, tags and search text in one transaction.

        prepare runs once the write lock is held, before the row is written, and returns the row to write (the
        library stores the file there), so a sweep, which takes the same lock, never sees a file whose row is
        about to be committed. If this exact file is already in the space (another process added it), nothing
        is written.
        """
        space_id = await self._space_id(sample.space)
        assert space_id is not None  # created when missing
        async with self._transaction() as db:
            row = await (
                await db.execute("SELECT id FROM samples WHERE space_id = ? AND sha256 = ?", (space_id, sample.sha256))
            ).fetchone()
            if row is not None:
                revision = await self._revision_of(db, space_id)
                return Change(int(row["id"]), revision, sample.sha256, duplicate=True)
            if prepare is not None:
                sample = await prepare(sample)
            cursor = await db.execute(
                "INSERT INTO samples (space_id, sha256, ext, name, uploader, description, duration, created_at,"
                " source, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    space_id,
                    sample.sha256,
                    sample.ext,
                    sample.name,
                    sample.uploader,
                    sample.description,
                    sample.duration,
                    time.time(),
                    sample.source,
                    to_blob(sample.vector),
                ),
            )
            sample_id = int(cursor.lastrowid)  # type: ignore[arg-type]
            await db.executemany(
                "INSERT INTO segments (sample_id, start, end, embedding) VALUES (?, ?, ?, ?)",
                [(sample_id, s, e, to_blob(v)) for s, e, v in sample.segments],
            )
            await db.executemany(
                "INSERT OR IGNORE INTO tags (sample_id, tag, score, auto) VALUES (?, ?, ?, ?)",
                [(sample_id, t, score, int(auto)) for t, score, auto in sample.tags],
            )
            if sample.platform_file_id:
                await db.execute(
                    "INSERT OR REPLACE INTO file_ids (sample_id, platform, file_id) VALUES (?, ?, ?)",
                    (sample_id, sample.platform, sample.platform_file_id),
                )
            await db.execute(
                "INSERT INTO samples_fts (rowid, name, description, tags) VALUES (?, ?, ?, ?)",
                (sample_id, fts_text(sample.name), sample.description, " ".join(t for t, _, _ in sample.tags)),
            )
            if sample.fingerprint is not None:
                await db.execute(
                    "INSERT INTO fingerprints (sample_id, data) VALUES (?, ?)", (sample_id, sample.fingerprint)
                )
            revision = await self._bump(db, space_id, sample_id, changes.ADD)
        return Change(sample_id, revision, sample.sha256)

    async def find_by_sha(self, space: str, sha256: str) -> int | None:
        """The id of this exact file in this space, if stored."""
        row = await (
            await self.db.execute(
                "SELECT s.id FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = ? AND s.sha256 = ?",
                (space, sha256),
            )
        ).fetchone()
        return int(row["id"]) if row else None

    async def get_samples(self, ids: list[int]) -> dict[int, SampleRow]:
        """Rows for these ids (missing ids are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self.db.execute_fetchall(
            "SELECT s.id, p.key AS space, s.sha256, s.ext, s.name, s.uploader, s.description, s.duration,"
            " s.created_at, (SELECT group_concat(tag, char(31)) FROM tags t WHERE t.sample_id = s.id) AS tags"
            f" FROM samples s JOIN spaces p ON p.id = s.space_id WHERE s.id IN ({marks})",
            ids,
        )
        return {
            int(r["id"]): SampleRow(
                id=int(r["id"]),
                space=r["space"],
                sha256=r["sha256"],
                ext=r["ext"],
                name=r["name"],
                uploader=r["uploader"],
                description=r["description"],
                duration=float(r["duration"]),
                created_at=float(r["created_at"]),
                tags=tuple(sorted(r["tags"].split("\x1f"))) if r["tags"] else (),
            )
            for r in rows
        }

    async def get_sample(self, sample_id: int) -> SampleRow | None:
        """One row, or None."""
        return (await self.get_samples([sample_id])).get(sample_id)

    async def remove_sample(self, sample_id: int) -> Change | None:
        """Delete a sample and everything hanging off it; None if it was not there."""
        async with self._transaction() as db:
            row = await (await db.execute("SELECT sha256, space_id FROM samples WHERE id = ?", (sample_id,))).fetchone()
            if row is None:
                return None
            await db.execute("DELETE FROM samples_fts WHERE rowid = ?", (sample_id,))
            await db.execute("DELETE FROM samples WHERE id = ?", (sample_id,))
            revision = await self._bump(db, row["space_id"], sample_id, changes.REMOVE)
        return Change(sample_id, revision, str(row["sha256"]))

    async def sweep(self, shas: Iterable[str], delete: Callable[[set[str]], Awaitable[None]]) -> set[str]:
        """Call delete with those of shas that no sample refers to, holding the write lock all the while.

        Additions store their file under the same lock before committing the row, so nothing deleted here can
        be a file that some process is about to refer to.
        """
        wanted = sorted(set(shas))
        async with self._transaction() as db:
            used: set[str] = set()
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = await (
                    await db.execute(f"SELECT DISTINCT sha256 FROM samples WHERE sha256 IN ({marks})", chunk)
                ).fetchall()
                used.update(r["sha256"] for r in rows)
            unused = set(wanted) - used
            if unused:
                await delete(unused)
        return unused

    async def snapshot(self, space: str) -> tuple[int, np.ndarray, np.ndarray]:
        """A space's revision with the (ids, vectors) it describes, read in one transaction."""
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                revision = await self.revision(space)
                ids, vectors = await self.vectors(space)
            finally:
                await self.db.execute("COMMIT")
        return revision, ids, vectors

    @staticmethod
    async def _revision_of(db: aiosqlite.Connection, space_id: int) -> int:
        row = await (await db.execute("SELECT revision FROM spaces WHERE id = ?", (space_id,))).fetchone()
        return int(row["revision"])  # type: ignore[index]

    @staticmethod
    async def _bump(db: aiosqlite.Connection, space_id: int, sample_id: int, op: str) -> int:
        """Increment a space's revision inside the current transaction, log the change, return the new revision."""
        await db.execute("UPDATE spaces SET revision = revision + 1 WHERE id = ?", (space_id,))
        revision = await SqliteStore._revision_of(db, space_id)
        await db.execute(
            "INSERT INTO changes (space_id, revision, sample_id, op) VALUES (?, ?, ?, ?)",
            (space_id, revision, sample_id, op),
        )
        if revision % changes.TRIM_EVERY == 0:
            await db.execute(
                "DELETE FROM changes WHERE space_id = ? AND revision <= ?", (space_id, revision - changes.KEEP)
            )
        return revision

    async def changes_since(self, space: str, revision: int) -> ChangeSet | None:
        """What changed in a space after revision, read in one transaction; None if the log no longer tells."""
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                row = await (
                    await self.db.execute("SELECT id, revision FROM spaces WHERE key = ?", (space,))
                ).fetchone()
                if row is None:
                    return None
                space_id, current = int(row["id"]), int(row["revision"])
                entries = await (
                    await self.db.execute(
                        "SELECT revision, sample_id, op FROM changes WHERE space_id = ? AND revision > ?"
                        " ORDER BY revision",
                        (space_id, revision),
                    )
                ).fetchall()
                effect = changes.net_effect(((r[0], r[1], r[2]) for r in entries), revision, current)
                if effect is None:
                    return None
                removed, added = effect
                found = await self.sample_vectors(added)
                count = await self.count(space)
            finally:
                await self.db.execute("COMMIT")
        kept = [i for i in added if i in found]
        vectors = np.stack([found[i] for i in kept]) if kept else np.zeros((0, 0), np.float32)
        return ChangeSet(revision, current, np.array(removed, np.int64), np.array(kept, np.int64), vectors, count)

    async def sha_in_use(self, sha256: str) -> bool:
        """Whether any sample in any space still refers to this file."""
        row = await (await self.db.execute("SELECT 1 FROM samples WHERE sha256 = ? LIMIT 1", (sha256,))).fetchone()
        return row is not None

    async def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of a space, for building its index."""
        rows = await (
            await self.db.execute(
                "SELECT s.id, s.embedding FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = ?"
                " ORDER BY s.id",
                (space,),
            )
        ).fetchall()
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        if not rows:
            return ids, np.zeros((0, 0), np.float32)
        return ids, np.stack([from_blob(r["embedding"]) for r in rows])

    async def fingerprints(self, space: str) -> tuple[int, list[tuple[int, bytes]]]:
        """A space's revision with the fingerprints of its samples, read in one transaction."""
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                revision = await self.revision(space)
                rows = await (
                    await self.db.execute(
                        "SELECT f.sample_id, f.data FROM fingerprints f JOIN samples s ON s.id = f.sample_id"
                        " JOIN spaces p ON p.id = s.space_id WHERE p.key = ? ORDER BY f.sample_id",
                        (space,),
                    )
                ).fetchall()
            finally:
                await self.db.execute("COMMIT")
        return revision, [(int(r["sample_id"]), bytes(r["data"])) for r in rows]

    async def set_fingerprint(self, sample_id: int, data: bytes) -> bool:
        """Store a sample's fingerprint (a backfill); False if the sample is gone."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT OR REPLACE INTO fingerprints (sample_id, data) SELECT id, ? FROM samples WHERE id = ?",
                (data, sample_id),
            )
        return cursor.rowcount > 0

    async def fingerprint_count(self, space: str) -> int:
        """How many samples of a space have fingerprints."""
        row = await (
            await self.db.execute(
                "SELECT count(*) AS n FROM fingerprints f JOIN samples s ON s.id = f.sample_id"
                " JOIN spaces p ON p.id = s.space_id WHERE p.key = ?",
                (space,),
            )
        ).fetchone()
        return int(row["n"])  # type: ignore[index]

    async def without_fingerprints(self, limit: int, current: bytes = b"") -> list[SampleRow]:
        """Samples with no fingerprint or one not beginning with current (older parameters), oldest first."""
        rows = await (
            await self.db.execute(
                "SELECT s.id FROM samples s LEFT JOIN fingerprints f ON f.sample_id = s.id"
                " WHERE f.sample_id IS NULL OR substr(f.data, 1, ?) != ? ORDER BY s.id LIMIT ?",
                (len(current), current, limit),
            )
        ).fetchall()
        found = await self.get_samples([int(r["id"]) for r in rows])
        return [found[i] for i in sorted(found)]

    async def sample_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Sample-level vectors for these ids."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self.db.execute_fetchall(f"SELECT id, embedding FROM samples WHERE id IN ({marks})", ids)
        return {int(r["id"]): from_blob(r["embedding"]) for r in rows}

    async def segments(self, ids: list[int]) -> dict[int, list[tuple[float, float, np.ndarray]]]:
        """The windows of these samples with their vectors."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self.db.execute_fetchall(
            f"SELECT sample_id, start, end, embedding FROM segments WHERE sample_id IN ({marks}) ORDER BY id", ids
        )
        out: dict[int, list[tuple[float, float, np.ndarray]]] = {}
        for r in rows:
            out.setdefault(int(r["sample_id"]), []).append((r["start"], r["end"], from_blob(r["embedding"])))
        return out

    async def revision(self, space: str) -> int:
        """A counter bumped by every change to the space."""
        rows = list(await self.db.execute_fetchall("SELECT revision FROM spaces WHERE key = ?", (space,)))
        return int(rows[0]["revision"]) if rows else 0

    async def count(self, space: str) -> int:
        """How many samples the space holds."""
        row = await (
            await self.db.execute(
                "SELECT count(*) AS n FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = ?", (space,)
            )
        ).fetchone()
        return int(row["n"])  # type: ignore[index]

    async def stats(self, space: str) -> tuple[int, float, int]:
        """(samples, total seconds, distinct uploaders) of a space."""
        row = await (
            await self.db.execute(
                "SELECT count(*) AS n, coalesce(sum(duration), 0) AS secs, count(DISTINCT uploader) AS users"
                " FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = ?",
                (space,),
            )
        ).fetchone()
        return int(row["n"]), float(row["secs"]), int(row["users"])  # type: ignore[index]

    async def lexical(self, spaces: list[str], query: str, limit: int) -> list[int]:
        """Sample ids matching the words of query by FTS5 BM25, best first (ties by id).

        The best LEXICAL_WINDOW matches of every space are ranked first and only those are joined to their rows to
        keep these spaces' ones; if that leaves fewer than limit, the whole match set is joined. Either way the
        answer is the same, but a common word no longer reads thousands of sample rows.
        """
        match = fts_query(query)
        if match is None or not spaces:
            return []
        marks = ",".join("?" * len(spaces))
        window = max(LEXICAL_WINDOW, 4 * limit)
        for inner in (f"ORDER BY score, id LIMIT {window}", ""):
            rows = list(
                await self.db.execute_fetchall(
                    "SELECT m.id FROM (SELECT rowid AS id, bm25(samples_fts, 10.0, 2.0, 5.0) AS score FROM samples_fts"
                    f" WHERE samples_fts MATCH ? {inner}) m JOIN samples s ON s.id = m.id"
                    f" JOIN spaces p ON p.id = s.space_id WHERE p.key IN ({marks}) ORDER BY m.score, m.id LIMIT ?",
                    [match, *spaces, limit],
                )
            )
            if len(rows) >= limit:
                break
        return [int(r["id"]) for r in rows]

    async def file_ids(self, ids: list[int], platform: str) -> dict[int, str]:
        """Known platform file handles for these samples."""
        if not ids or not platform:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self.db.execute_fetchall(
            f"SELECT sample_id, file_id FROM file_ids WHERE platform = ? AND sample_id IN ({marks})", [platform, *ids]
        )
        return {int(r["sample_id"]): r["file_id"] for r in rows}

    async def set_file_id(self, sample_id: int, platform: str, file_id: str) -> None:
        """Remember a platform file handle for a sample."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO file_ids (sample_id, platform, file_id)"
                " SELECT id, ?, ? FROM samples WHERE id = ?",
                (platform, file_id, sample_id),
            )

    async def space_labels(self, space: str) -> list[str]:
        """Labels a space has added to the vocabulary."""
        rows = await (
            await self.db.execute(
                "SELECT l.label FROM space_labels l JOIN spaces p ON p.id = l.space_id WHERE p.key = ? ORDER BY label",
                (space,),
            )
        ).fetchall()
        return [r["label"] for r in rows]

    async def add_space_label(self, space: str, label: str) -> None:
        """Add a label to a space's vocabulary."""
        space_id = await self._space_id(space)
        async with self._transaction() as db:
            await db.execute("INSERT OR IGNORE INTO space_labels (space_id, label) VALUES (?, ?)", (space_id, label))

    async def remove_space_label(self, space: str, label: str) -> bool:
        """Remove a label from a space's vocabulary; False if it was not there."""
        space_id = await self._space_id(space, create=False)
        if space_id is None:
            return False
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM space_labels WHERE space_id = ? AND label = ?", (space_id, label))
        return cursor.rowcount > 0

    async def cached_texts(self, model: str, texts: list[str]) -> dict[str, np.ndarray]:
        """Cached text embeddings for this model."""
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(texts), 500):
            chunk = texts[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = await (
                await self.db.execute(
                    f"SELECT text, embedding FROM text_cache WHERE model = ? AND text IN ({marks})", [model, *chunk]
                )
            ).fetchall()
            out.update({r["text"]: from_blob(r["embedding"]) for r in rows})
        return out

    async def cache_texts(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        """Store text embeddings for this model."""
        async with self._transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO text_cache (model, text, embedding) VALUES (?, ?, ?)",
                [(model, t, to_blob(v)) for t, v in vectors.items()],
            )

    async def get_meta(self, key: str) -> str | None:
        """A value from the meta table."""
        row = await (await self.db.execute("SELECT value FROM meta WHERE key = ?", (key,))).fetchone()
        return str(row["value"]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value in the meta table."""
        async with self._transaction() as db:
            await db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def save_query(self, query_id: str, query: SavedQuery) -> None:
        """Keep a search for paging; searches older than a week, or beyond the newest 10 000, are dropped."""
        now = time.time()
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO queries (id, spaces, vector, text, k, title, exclude, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    query_id,
                    json.dumps(list(query.spaces)),
                    to_blob(query.vector),
                    query.text,
                    query.k,
                    query.title,
                    query.exclude,
                    now,
                ),
            )
            await db.execute(
                "DELETE FROM queries WHERE created_at < ? OR created_at < coalesce("
                "(SELECT created_at FROM queries ORDER BY created_at DESC LIMIT 1 OFFSET ?), 0)",
                (now - QUERY_SECONDS, QUERY_ROWS - 1),
            )

    async def load_query(self, query_id: str) -> SavedQuery | None:
        """A kept search, or None if it was never kept or has expired."""
        row = await (
            await self.db.execute(
                "SELECT spaces, vector, text, k, title, exclude FROM queries WHERE id = ? AND created_at >= ?",
                (query_id, time.time() - QUERY_SECONDS),
            )
        ).fetchone()
        if row is None:
            return None
        return SavedQuery(
            tuple(json.loads(row["spaces"])),
            from_blob(row["vector"]),
            row["text"],
            int(row["k"]),
            row["title"],
            None if row["exclude"] is None else int(row["exclude"]),
        )

    async def rename_space(self, old: str, new: str) -> int:
        """Give space old's samples and labels to space new; returns how many samples moved (0 if already done).

        When new already has sounds, old's are merged in (exact copies stay once) and old is deleted.
        """
        async with self._transaction() as db:
            found = await (await db.execute("SELECT id FROM spaces WHERE key = ?", (old,))).fetchone()
            if found is None or old == new:
                return 0
            old_id = int(found["id"])
            target = await (await db.execute("SELECT id FROM spaces WHERE key = ?", (new,))).fetchone()
            if target is None:
                await db.execute("UPDATE spaces SET key = ? WHERE id = ?", (new, old_id))
                await self._bump(db, old_id, 0, changes.RESET)
                moved = await (
                    await db.execute("SELECT count(*) AS n FROM samples WHERE space_id = ?", (old_id,))
                ).fetchone()
                count = int(moved["n"])  # type: ignore[index]
            else:
                new_id = int(target["id"])
                cursor = await db.execute(
                    "UPDATE samples SET space_id = ? WHERE space_id = ?"
                    " AND sha256 NOT IN (SELECT sha256 FROM samples WHERE space_id = ?)",
                    (new_id, old_id, new_id),
                )
                count = cursor.rowcount
                await db.execute(
                    "INSERT OR IGNORE INTO space_labels (space_id, label) SELECT ?, label FROM space_labels"
                    " WHERE space_id = ?",
                    (new_id, old_id),
                )
                await db.execute(
                    "DELETE FROM samples_fts WHERE rowid IN (SELECT id FROM samples WHERE space_id = ?)", (old_id,)
                )
                await db.execute("DELETE FROM spaces WHERE id = ?", (old_id,))  # cascades to copies left behind
                await self._bump(db, new_id, 0, changes.RESET)
        self._space_ids.pop(old, None)
        self._space_ids.pop(new, None)
        return count

    async def integrity_ok(self) -> bool:
        """PRAGMA integrity_check says ok."""
        row = await (await self.db.execute("PRAGMA integrity_check")).fetchone()
        return row is not None and row[0] == "ok"
