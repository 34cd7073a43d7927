"""The adapters' inbox: one table in the data dir's SQLite, on a connection of its own that commits durably."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from core import crashpoints
from core.config import Config
from core.messages import Entry

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # runs that may start on one request: one that kills every run is given up after this many
KEEP_DONE_SECONDS = 24 * 3600.0  # answered requests are remembered this long, so a redelivery is not answered again
KEEP_DONE_ROWS = 10_000  # and at most this many of them
PRUNE_EVERY = 256  # done marks between two prunes


class InboxError(RuntimeError):
    """The database has no inbox table (the store, which migrates the schema, was not opened first)."""


class SqliteInbox:
    """The Inbox on SQLite: record in one transaction per batch, synchronous=FULL so a commit survives a power cut."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = asyncio.Lock()  # one connection: a batch's transaction must not take in another task's write
        self._marks = 0
        self.backlog = 0  # requests taken on and not answered yet (the inbox_backlog metric)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[SqliteInbox]:
        """Open the inbox of a database the store has already migrated; closed on the way out."""
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            # The store holds the write lock while it stores a file (fsync and all): wait for it, don't fail.
            await db.execute("PRAGMA busy_timeout=30000")
            await db.execute("PRAGMA synchronous=FULL")
            found = await (
                await db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'inbox'")
            ).fetchone()
            if found is None:
                raise InboxError(f"{path} has no inbox table; open the store first, it migrates the schema")
            inbox = cls(db, path)
            await inbox.prune()
            await inbox._count()
            yield inbox
        finally:
            await db.close()

    async def record(self, platform: str, items: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Journal these requests (key -> payload) in one commit; returns the keys no earlier call had journaled."""
        if not items:
            return set()
        now = time.time()
        fresh: set[str] = set()
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for key, payload in items.items():
                    cursor = await self.db.execute(
                        "INSERT INTO inbox (platform, key, received_at, payload) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (platform, key) DO NOTHING",
                        (platform, key, now, json.dumps(payload, ensure_ascii=False, separators=(",", ":"))),
                    )
                    if cursor.rowcount > 0:
                        fresh.add(key)
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")
        self.backlog += len(fresh)
        crashpoints.reached("journaled")
        return fresh

    async def done(self, platform: str, key: str) -> None:
        """Mark one request answered; only its key is kept (its payload may hold an interaction token)."""
        crashpoints.reached("replied")
        async with self._lock:
            cursor = await self.db.execute(
                "UPDATE inbox SET state = 'done', payload = '{}' WHERE platform = ? AND key = ? AND state = 'pending'",
                (platform, key),
            )
        self.backlog = max(0, self.backlog - cursor.rowcount)
        self._marks += 1
        if self._marks % PRUNE_EVERY == 0:
            await self.prune()

    async def pending(self, platform: str) -> list[Entry]:
        """What earlier runs took on and never answered, oldest first; each call counts one more attempt.

        A request that has already had MAX_ATTEMPTS runs (it may be what kills them) is marked done and left out.
        """
        entries: list[Entry] = []
        given_up: list[tuple[str, str]] = []
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                rows = await (
                    await self.db.execute(
                        "SELECT key, received_at, payload, attempts FROM inbox"
                        " WHERE platform = ? AND state = 'pending' ORDER BY received_at, rowid",
                        (platform,),
                    )
                ).fetchall()
                for row in rows:
                    key, attempts = str(row["key"]), int(row["attempts"])
                    payload = _payload(row["payload"])
                    if payload is None or attempts >= MAX_ATTEMPTS:
                        given_up.append((key, "it can't be read" if payload is None else f"{attempts} attempts"))
                        await self.db.execute(
                            "UPDATE inbox SET state = 'done', payload = '{}' WHERE platform = ? AND key = ?",
                            (platform, key),
                        )
                        continue
                    await self.db.execute(
                        "UPDATE inbox SET attempts = attempts + 1 WHERE platform = ? AND key = ?", (platform, key)
                    )
                    entries.append(Entry(platform, key, float(row["received_at"]), payload, attempts + 1))
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")
        for key, why in given_up:
            log.warning("inbox: giving up on %s request %s (%s)", platform, key, why)
        await self._count()
        return entries

    async def _count(self) -> None:
        """Count what is pending (at start, and after a replay gave up on some)."""
        async with self._lock:
            row = await (await self.db.execute("SELECT count(*) FROM inbox WHERE state = 'pending'")).fetchone()
        self.backlog = int(row[0]) if row else 0

    async def prune(self) -> int:
        """Forget answered requests older than KEEP_DONE_SECONDS, or beyond the newest KEEP_DONE_ROWS."""
        async with self._lock:
            cursor = await self.db.execute(
                "DELETE FROM inbox WHERE state = 'done' AND (received_at < ? OR rowid NOT IN"
                " (SELECT rowid FROM inbox WHERE state = 'done' ORDER BY received_at DESC, rowid DESC LIMIT ?))",
                (time.time() - KEEP_DONE_SECONDS, KEEP_DONE_ROWS),
            )
        return max(cursor.rowcount, 0)


class PostgresInbox:
    """The Inbox on PostgreSQL: SqliteInbox's table and meaning; each commit is durable (synchronous_commit)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, owner: str = "") -> None:
        self.pool = pool
        self.dsn = dsn
        self.owner = owner  # this frontend's name: pending() replays only what it journaled itself
        self._marks = 0
        self.backlog = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, owner: str = "") -> AsyncIterator[PostgresInbox]:
        """Open the inbox of a database the store has already migrated; closed on the way out."""
        from core.config import masked_url
        from core.pgstore import connect_pool

        pool = await connect_pool(dsn, size=2)
        try:
            if await pool.fetchval("SELECT to_regclass('inbox')") is None:
                raise InboxError(f"{masked_url(dsn)} has no inbox table; open the store first, it migrates the schema")
            inbox = cls(pool, dsn, owner)
            await inbox.prune()
            await inbox._count()
            yield inbox
        finally:
            await pool.close()

    async def record(self, platform: str, items: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Journal these requests (key -> payload) in one commit; returns the keys no earlier call had journaled."""
        if not items:
            return set()
        now = time.time()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "INSERT INTO inbox (platform, key, received_at, payload, owner)"
                " SELECT $1, k, $2, p, $5 FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(k, p, n)"
                " ORDER BY n ON CONFLICT (platform, key) DO NOTHING RETURNING key",
                platform,
                now,
                list(items),
                [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in items.values()],
                self.owner,
            )
        fresh = {str(r["key"]) for r in rows}
        self.backlog += len(fresh)
        crashpoints.reached("journaled")
        return fresh

    async def done(self, platform: str, key: str) -> None:
        """Mark one request answered; only its key is kept (its payload may hold an interaction token)."""
        crashpoints.reached("replied")
        status = await self.pool.execute(
            "UPDATE inbox SET state = 'done', payload = '{}' WHERE platform = $1 AND key = $2 AND state = 'pending'",
            platform,
            key,
        )
        self.backlog = max(0, self.backlog - int(status.rsplit(" ", 1)[-1]))
        self._marks += 1
        if self._marks % PRUNE_EVERY == 0:
            await self.prune()

    async def pending(self, platform: str) -> list[Entry]:
        """What earlier runs took on and never answered, oldest first; each call counts one more attempt.

        A request that has already had MAX_ATTEMPTS runs (it may be what kills them) is marked done and left out.
        """
        entries: list[Entry] = []
        given_up: list[tuple[str, str]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT key, received_at, payload, attempts FROM inbox"
                " WHERE platform = $1 AND state = 'pending' AND owner = $2 ORDER BY received_at, seq FOR UPDATE",
                platform,
                self.owner,
            )
            for row in rows:
                key, attempts = str(row["key"]), int(row["attempts"])
                payload = _payload(row["payload"])
                if payload is None or attempts >= MAX_ATTEMPTS:
                    given_up.append((key, "it can't be read" if payload is None else f"{attempts} attempts"))
                    await conn.execute(
                        "UPDATE inbox SET state = 'done', payload = '{}' WHERE platform = $1 AND key = $2",
                        platform,
                        key,
                    )
                    continue
                await conn.execute(
                    "UPDATE inbox SET attempts = attempts + 1 WHERE platform = $1 AND key = $2", platform, key
                )
                entries.append(Entry(platform, key, float(row["received_at"]), payload, attempts + 1))
        for key, why in given_up:
            log.warning("inbox: giving up on %s request %s (%s)", platform, key, why)
        await self._count()
        return entries

    async def _count(self) -> None:
        """Count what is pending (at start, and after a replay gave up on some)."""
        self.backlog = int(await self.pool.fetchval("SELECT count(*) FROM inbox WHERE state = 'pending'"))

    async def prune(self) -> int:
        """Forget answered requests older than KEEP_DONE_SECONDS, or beyond the newest KEEP_DONE_ROWS."""
        status = await self.pool.execute(
            "DELETE FROM inbox WHERE state = 'done' AND (received_at < $1 OR seq NOT IN"
            " (SELECT seq FROM inbox WHERE state = 'done' ORDER BY received_at DESC, seq DESC LIMIT $2))",
            time.time() - KEEP_DONE_SECONDS,
            KEEP_DONE_ROWS,
        )
        return int(status.rsplit(" ", 1)[-1])


@asynccontextmanager
async def open_inbox(config: Config) -> AsyncIterator[SqliteInbox | PostgresInbox]:
    """The inbox next to the store the config asks for (PostgreSQL when [cluster] postgres_dsn is set)."""
    if config.cluster.postgres_dsn:
        async with PostgresInbox.open(config.cluster.postgres_dsn, config.cluster.frontend_name) as pg:
            yield pg
    else:
        async with SqliteInbox.open(Path(config.data_dir) / "shira.db") as sqlite:
            yield sqlite


def _payload(text: str) -> dict[str, Any] | None:
    """A stored payload, or None if it is not a JSON object (then the request can't be rebuilt)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
