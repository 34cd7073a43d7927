"""PostgreSQL metadata store (asyncpg): the Store protocol with SqliteStore's meaning, for several processes at once."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from core import changes
from core.changes import ChangeSet
from core.config import ServerUnreachable, masked_url
from core.pgschema import MIGRATIONS
from core.store import QUERY_ROWS, QUERY_SECONDS, Change, NewSample, SampleRow, SavedQuery, from_blob, fts_text, to_blob

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

CONNECT_SECONDS = 10.0  # an unreachable server is reported after this long, never waited on for ever
POOL_SIZE = 8
FILES_LOCK = 0x5348495241  # advisory lock held by additions and sweeps: files are stored and deleted under it
MIGRATE_LOCK = FILES_LOCK + 1  # held while migrating, so two processes starting at once migrate once
# samples.search: names weigh most, then tags, then descriptions (SqliteStore's bm25 weights are 10, 5, 2)
SEARCH = (
    "setweight(to_tsvector('shira', {name}), 'A') || setweight(to_tsvector('shira', {tags}), 'B')"
    " || setweight(to_tsvector('shira', {description}), 'C')"
)
RANK_WEIGHTS = "{0.1, 0.2, 0.5, 1.0}"  # ts_rank_cd's weights of D, C, B, A


async def connect_pool(dsn: str, size: int = POOL_SIZE) -> asyncpg.Pool:
    """A connection pool on dsn; ServerUnreachable (naming the URL, password masked) if it can't be had in time."""
    import asyncpg

    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise ServerUnreachable(f"can't reach PostgreSQL at {masked_url(dsn)}: {exc or type(exc).__name__}") from exc
    assert pool is not None
    return pool


def ts_words(text: str) -> str | None:
    """Free text as a websearch_to_tsquery string: each word on its own, any word may match."""
    words = re.findall(r"\w+", text.lower())
    return " or ".join(words[:32]) if words else None


class PostgresStore:
    """The cluster store: every process shares one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        """Connect (within CONNECT_SECONDS) and migrate the schema."""
        store = cls(await connect_pool(dsn), dsn)
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    @asynccontextmanager
    async def _transaction(self, isolation: str = "read_committed", readonly: bool = False) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=readonly):
            yield conn

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if version > len(MIGRATIONS):
                where = masked_url(self.dsn)
                raise RuntimeError(f"{where} has schema v{version}, newer than this shira (v{len(MIGRATIONS)})")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("migrating %s to schema v%d", masked_url(self.dsn), number)
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)

    async def schema_version(self) -> int:
        """The database's schema version."""
        return int(await self.pool.fetchval("SELECT max(version) FROM schema_version") or 0)

    async def spaces(self) -> list[str]:
        """Every space key."""
        return [r["key"] for r in await self.pool.fetch("SELECT key FROM spaces ORDER BY id")]

    @staticmethod
    async def _space_id(conn: Any, key: str) -> int:
        """The id of a space, created if missing, inside the caller's transaction."""
        found = await conn.fetchval("SELECT id FROM spaces WHERE key = $1", key)
        if found is None:
            await conn.execute(
                "INSERT INTO spaces (key, created_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, time.time()
            )
            found = await conn.fetchval("SELECT id FROM spaces WHERE key = $1", key)
        return int(found)

    @staticmethod
    async def _bump(conn: Any, space_id: int, sample_id: int, op: str) -> int:
        """Increment a space's revision inside the transaction (its row stays locked until commit), log the change."""
        revision = int(
            await conn.fetchval("UPDATE spaces SET revision = revision + 1 WHERE id = $1 RETURNING revision", space_id)
        )
        await conn.execute(
            "INSERT INTO changes (space_id, revision, sample_id, op) VALUES ($1, $2, $3, $4)",
            space_id,
            revision,
            sample_id,
            op,
        )
        if revision % changes.TRIM_EVERY == 0:
            await conn.execute(
                "DELETE FROM changes WHERE space_id = $1 AND revision <= $2", space_id, revision - changes.KEEP
            )
        return revision

    async def add_sample(
        self, sample: NewSample, prepare: Callable[[NewSample], Awaitable[NewSample]] | None = None
    ) -> Change:
        """Insert a sample with everything hanging off it in one transaction, under the files lock (see sweep).

        prepare runs once the lock is held, before the row is written, and returns the row to write. If this
        exact file is already in the space (another process added it), nothing is written.
        """
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FILES_LOCK)
            space_id = await self._space_id(conn, sample.space)
            found = await conn.fetchval(
                "SELECT id FROM samples WHERE space_id = $1 AND sha256 = $2", space_id, sample.sha256
            )
            if found is not None:
                revision = int(await conn.fetchval("SELECT revision FROM spaces WHERE id = $1", space_id))
                return Change(int(found), revision, sample.sha256, duplicate=True)
            if prepare is not None:
                sample = await prepare(sample)
            tags = " ".join(t for t, _, _ in sample.tags)
            sample_id = int(
                await conn.fetchval(
                    "INSERT INTO samples (space_id, sha256, ext, name, uploader, description, duration, created_at,"
                    " source, embedding, search) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                    + SEARCH.format(name="$11::text", tags="$12::text", description="$6::text")
                    + ") RETURNING id",
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
                    fts_text(sample.name),
                    tags,
                )
            )
            await conn.executemany(
                'INSERT INTO segments (sample_id, start, "end", embedding) VALUES ($1, $2, $3, $4)',
                [(sample_id, float(s), float(e), to_blob(v)) for s, e, v in sample.segments],
            )
            await conn.executemany(
                "INSERT INTO tags (sample_id, tag, score, auto) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                [(sample_id, t, score, int(auto)) for t, score, auto in sample.tags],
            )
            if sample.platform_file_id:
                await conn.execute(
                    "INSERT INTO file_ids (sample_id, platform, file_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (sample_id, platform) DO UPDATE SET file_id = excluded.file_id",
                    sample_id,
                    sample.platform,
                    sample.platform_file_id,
                )
            if sample.fingerprint is not None:
                await conn.execute(
                    "INSERT INTO fingerprints (sample_id, data) VALUES ($1, $2)", sample_id, sample.fingerprint
                )
            revision = await self._bump(conn, space_id, sample_id, changes.ADD)
        return Change(sample_id, revision, sample.sha256)

    async def remove_sample(self, sample_id: int) -> Change | None:
        """Delete a sample and everything hanging off it; None if it was not there."""
        async with self._transaction() as conn:
            row = await conn.fetchrow("DELETE FROM samples WHERE id = $1 RETURNING sha256, space_id", sample_id)
            if row is None:
                return None
            revision = await self._bump(conn, int(row["space_id"]), sample_id, changes.REMOVE)
        return Change(sample_id, revision, str(row["sha256"]))

    async def sweep(self, shas: Iterable[str], delete: Callable[[set[str]], Awaitable[None]]) -> set[str]:
        """Call delete with those of shas that no sample refers to, holding the files lock all the while.

        Additions (in any process) store their file under the same lock before committing the row, so nothing
        deleted here can be a file that some process is about to refer to.
        """
        wanted = sorted(set(shas))
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FILES_LOCK)
            rows = await conn.fetch("SELECT DISTINCT sha256 FROM samples WHERE sha256 = ANY($1::text[])", wanted)
            unused = set(wanted) - {r["sha256"] for r in rows}
            if unused:
                await delete(unused)
        return unused

    async def find_by_sha(self, space: str, sha256: str) -> int | None:
        """The id of this exact file in this space, if stored."""
        found = await self.pool.fetchval(
            "SELECT s.id FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = $1 AND s.sha256 = $2",
            space,
            sha256,
        )
        return None if found is None else int(found)

    async def sha_in_use(self, sha256: str) -> bool:
        """Whether any sample in any space still refers to this file."""
        return await self.pool.fetchval("SELECT 1 FROM samples WHERE sha256 = $1 LIMIT 1", sha256) is not None

    async def get_samples(self, ids: list[int]) -> dict[int, SampleRow]:
        """Rows for these ids (missing ids are left out)."""
        if not ids:
            return {}
        rows = await self.pool.fetch(
            "SELECT s.id, p.key AS space, s.sha256, s.ext, s.name, s.uploader, s.description, s.duration,"
            " s.created_at, (SELECT array_agg(tag) FROM tags t WHERE t.sample_id = s.id) AS tags"
            " FROM samples s JOIN spaces p ON p.id = s.space_id WHERE s.id = ANY($1::bigint[])",
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
                tags=tuple(sorted(r["tags"] or ())),
            )
            for r in rows
        }

    async def get_sample(self, sample_id: int) -> SampleRow | None:
        """One row, or None."""
        return (await self.get_samples([sample_id])).get(sample_id)

    async def revision(self, space: str) -> int:
        """A counter bumped by every change to the space."""
        found = await self.pool.fetchval("SELECT revision FROM spaces WHERE key = $1", space)
        return 0 if found is None else int(found)

    async def count(self, space: str) -> int:
        """How many samples the space holds."""
        return await self._count(self.pool, space)

    @staticmethod
    async def _count(conn: Any, space: str) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = $1", space
            )
        )

    async def stats(self, space: str) -> tuple[int, float, int]:
        """(samples, total seconds, distinct uploaders) of a space."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(duration), 0) AS secs, count(DISTINCT uploader) AS users"
            " FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = $1",
            space,
        )
        return int(row["n"]), float(row["secs"]), int(row["users"])

    @staticmethod
    async def _vectors(conn: Any, space: str) -> tuple[np.ndarray, np.ndarray]:
        rows = await conn.fetch(
            "SELECT s.id, s.embedding FROM samples s JOIN spaces p ON p.id = s.space_id WHERE p.key = $1 ORDER BY s.id",
            space,
        )
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        if not rows:
            return ids, np.zeros((0, 0), np.float32)
        return ids, np.stack([from_blob(r["embedding"]) for r in rows])

    async def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of a space, for building its index."""
        return await self._vectors(self.pool, space)

    async def snapshot(self, space: str) -> tuple[int, np.ndarray, np.ndarray]:
        """A space's revision with the (ids, vectors) it describes, read in one REPEATABLE READ transaction."""
        async with self._transaction("repeatable_read", readonly=True) as conn:
            found = await conn.fetchval("SELECT revision FROM spaces WHERE key = $1", space)
            ids, vectors = await self._vectors(conn, space)
        return (0 if found is None else int(found)), ids, vectors

    async def changes_since(self, space: str, revision: int) -> ChangeSet | None:
        """What changed in a space after revision, read in one snapshot; None if the log no longer tells."""
        async with self._transaction("repeatable_read", readonly=True) as conn:
            row = await conn.fetchrow("SELECT id, revision FROM spaces WHERE key = $1", space)
            if row is None:
                return None
            space_id, current = int(row["id"]), int(row["revision"])
            entries = await conn.fetch(
                "SELECT revision, sample_id, op FROM changes WHERE space_id = $1 AND revision > $2 ORDER BY revision",
                space_id,
                revision,
            )
            effect = changes.net_effect(((r[0], r[1], r[2]) for r in entries), revision, current)
            if effect is None:
                return None
            removed, added = effect
            rows = await conn.fetch(
                "SELECT id, embedding FROM samples WHERE id = ANY($1::bigint[]) AND space_id = $2", added, space_id
            )
            count = await self._count(conn, space)
        found = {int(r["id"]): from_blob(r["embedding"]) for r in rows}
        kept = [i for i in added if i in found]
        vectors = np.stack([found[i] for i in kept]) if kept else np.zeros((0, 0), np.float32)
        return ChangeSet(revision, current, np.array(removed, np.int64), np.array(kept, np.int64), vectors, count)

    async def sample_vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Sample-level vectors for these ids."""
        if not ids:
            return {}
        rows = await self.pool.fetch("SELECT id, embedding FROM samples WHERE id = ANY($1::bigint[])", ids)
        return {int(r["id"]): from_blob(r["embedding"]) for r in rows}

    async def segments(self, ids: list[int]) -> dict[int, list[tuple[float, float, np.ndarray]]]:
        """The windows of these samples with their vectors."""
        if not ids:
            return {}
        rows = await self.pool.fetch(
            'SELECT sample_id, start, "end", embedding FROM segments WHERE sample_id = ANY($1::bigint[]) ORDER BY id',
            ids,
        )
        out: dict[int, list[tuple[float, float, np.ndarray]]] = {}
        for r in rows:
            out.setdefault(int(r["sample_id"]), []).append((r["start"], r["end"], from_blob(r["embedding"])))
        return out

    async def fingerprints(self, space: str) -> tuple[int, list[tuple[int, bytes]]]:
        """A space's revision with the fingerprints of its samples, read in one snapshot."""
        async with self._transaction("repeatable_read", readonly=True) as conn:
            found = await conn.fetchval("SELECT revision FROM spaces WHERE key = $1", space)
            rows = await conn.fetch(
                "SELECT f.sample_id, f.data FROM fingerprints f JOIN samples s ON s.id = f.sample_id"
                " JOIN spaces p ON p.id = s.space_id WHERE p.key = $1 ORDER BY f.sample_id",
                space,
            )
        return (0 if found is None else int(found)), [(int(r["sample_id"]), bytes(r["data"])) for r in rows]

    async def set_fingerprint(self, sample_id: int, data: bytes) -> bool:
        """Store a sample's fingerprint (a backfill); False if the sample is gone."""
        status = await self.pool.execute(
            "INSERT INTO fingerprints (sample_id, data) SELECT id, $1 FROM samples WHERE id = $2"
            " ON CONFLICT (sample_id) DO UPDATE SET data = excluded.data",
            data,
            sample_id,
        )
        return _rowcount(status) > 0

    async def fingerprint_count(self, space: str) -> int:
        """How many samples of a space have fingerprints."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM fingerprints f JOIN samples s ON s.id = f.sample_id"
                " JOIN spaces p ON p.id = s.space_id WHERE p.key = $1",
                space,
            )
        )

    async def without_fingerprints(self, limit: int, current: bytes = b"") -> list[SampleRow]:
        """Samples without a fingerprint, or with one that doesn't start with `current` (older parameters)."""
        rows = await self.pool.fetch(
            "SELECT s.id FROM samples s LEFT JOIN fingerprints f ON f.sample_id = s.id"
            " WHERE f.sample_id IS NULL OR substring(f.data from 1 for $2) <> $3 ORDER BY s.id LIMIT $1",
            limit,
            len(current),
            current,
        )
        found = await self.get_samples([int(r["id"]) for r in rows])
        return [found[i] for i in sorted(found)]

    async def lexical(self, spaces: list[str], query: str, limit: int) -> list[int]:
        """Sample ids matching the words of query by ts_rank_cd (names, then tags, then descriptions), best first."""
        words = ts_words(query)
        if words is None or not spaces:
            return []
        rows = await self.pool.fetch(
            "SELECT s.id FROM samples s JOIN spaces p ON p.id = s.space_id,"
            " websearch_to_tsquery('shira', $1) q WHERE s.search @@ q AND p.key = ANY($2::text[])"
            f" ORDER BY ts_rank_cd('{RANK_WEIGHTS}', s.search, q) DESC, s.id LIMIT $3",
            words,
            spaces,
            limit,
        )
        return [int(r["id"]) for r in rows]

    async def file_ids(self, ids: list[int], platform: str) -> dict[int, str]:
        """Known platform file handles for these samples."""
        if not ids or not platform:
            return {}
        rows = await self.pool.fetch(
            "SELECT sample_id, file_id FROM file_ids WHERE platform = $1 AND sample_id = ANY($2::bigint[])",
            platform,
            ids,
        )
        return {int(r["sample_id"]): r["file_id"] for r in rows}

    async def set_file_id(self, sample_id: int, platform: str, file_id: str) -> None:
        """Remember a platform file handle for a sample."""
        await self.pool.execute(
            "INSERT INTO file_ids (sample_id, platform, file_id) SELECT id, $2, $3 FROM samples WHERE id = $1"
            " ON CONFLICT (sample_id, platform) DO UPDATE SET file_id = excluded.file_id",
            sample_id,
            platform,
            file_id,
        )

    async def space_labels(self, space: str) -> list[str]:
        """Labels a space has added to the vocabulary."""
        rows = await self.pool.fetch(
            "SELECT l.label FROM space_labels l JOIN spaces p ON p.id = l.space_id WHERE p.key = $1 ORDER BY label",
            space,
        )
        return [r["label"] for r in rows]

    async def add_space_label(self, space: str, label: str) -> None:
        """Add a label to a space's vocabulary."""
        async with self._transaction() as conn:
            space_id = await self._space_id(conn, space)
            await conn.execute(
                "INSERT INTO space_labels (space_id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING", space_id, label
            )

    async def remove_space_label(self, space: str, label: str) -> bool:
        """Remove a label from a space's vocabulary; False if it was not there."""
        status = await self.pool.execute(
            "DELETE FROM space_labels l USING spaces p WHERE p.id = l.space_id AND p.key = $1 AND l.label = $2",
            space,
            label,
        )
        return _rowcount(status) > 0

    async def cached_texts(self, model: str, texts: list[str]) -> dict[str, np.ndarray]:
        """Cached text embeddings for this model."""
        if not texts:
            return {}
        rows = await self.pool.fetch(
            "SELECT text, embedding FROM text_cache WHERE model = $1 AND text = ANY($2::text[])", model, texts
        )
        return {r["text"]: from_blob(r["embedding"]) for r in rows}

    async def cache_texts(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        """Store text embeddings for this model."""
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO text_cache (model, text, embedding) VALUES ($1, $2, $3)"
                " ON CONFLICT (model, text) DO UPDATE SET embedding = excluded.embedding",
                [(model, t, to_blob(v)) for t, v in vectors.items()],
            )

    async def get_meta(self, key: str) -> str | None:
        """A value from the meta table."""
        found = await self.pool.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return None if found is None else str(found)

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value in the meta table."""
        await self.pool.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    async def save_query(self, query_id: str, query: SavedQuery) -> None:
        """Keep a search for paging; searches older than a week, or beyond the newest QUERY_ROWS, are dropped."""
        now = time.time()
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO queries (id, spaces, vector, text, k, title, exclude, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET spaces = excluded.spaces,"
                " vector = excluded.vector, text = excluded.text, k = excluded.k, title = excluded.title,"
                " exclude = excluded.exclude, created_at = excluded.created_at",
                query_id,
                json.dumps(list(query.spaces)),
                to_blob(query.vector),
                query.text,
                query.k,
                query.title,
                query.exclude,
                now,
            )
            await conn.execute(
                "DELETE FROM queries WHERE created_at < $1 OR created_at < coalesce("
                "(SELECT created_at FROM queries ORDER BY created_at DESC LIMIT 1 OFFSET $2), 0)",
                now - QUERY_SECONDS,
                QUERY_ROWS - 1,
            )

    async def load_query(self, query_id: str) -> SavedQuery | None:
        """A kept search, or None if it was never kept or has expired."""
        row = await self.pool.fetchrow(
            "SELECT spaces, vector, text, k, title, exclude FROM queries WHERE id = $1 AND created_at >= $2",
            query_id,
            time.time() - QUERY_SECONDS,
        )
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
        if old == new:
            return 0
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FILES_LOCK)  # no addition to old meanwhile
            old_id = await conn.fetchval("SELECT id FROM spaces WHERE key = $1", old)
            if old_id is None:
                return 0
            new_id = await conn.fetchval("SELECT id FROM spaces WHERE key = $1", new)
            if new_id is None:
                await conn.execute("UPDATE spaces SET key = $1 WHERE id = $2", new, old_id)
                await self._bump(conn, old_id, 0, changes.RESET)
                return int(await conn.fetchval("SELECT count(*) FROM samples WHERE space_id = $1", old_id))
            status = await conn.execute(
                "UPDATE samples SET space_id = $1 WHERE space_id = $2"
                " AND sha256 NOT IN (SELECT sha256 FROM samples WHERE space_id = $1)",
                new_id,
                old_id,
            )
            await conn.execute(
                "INSERT INTO space_labels (space_id, label) SELECT $1, label FROM space_labels WHERE space_id = $2"
                " ON CONFLICT DO NOTHING",
                new_id,
                old_id,
            )
            await conn.execute("DELETE FROM spaces WHERE id = $1", old_id)  # cascades to copies left behind
            await self._bump(conn, new_id, 0, changes.RESET)
        return _rowcount(status)


def _rowcount(status: str) -> int:
    """The row count at the end of a command status such as "INSERT 0 1" or "DELETE 3"."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
