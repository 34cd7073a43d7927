"""`shira migrate --to postgresql://…`: copy the embedded SQLite library into a PostgreSQL store, then verify it."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import masked_url
from core.pgschema import SEQUENCES, TABLES
from core.pgstore import SEARCH, PostgresStore
from core.store import SqliteStore

log = logging.getLogger(__name__)

BATCH = 2_000  # rows per COPY


class MigrateError(RuntimeError):
    """The target is not empty, or the copy does not match the source."""


@dataclass(frozen=True)
class TableCheck:
    """One table on both sides: its row count and a sha256 over its rows in primary-key order."""

    table: str
    rows: int
    source_sha256: str
    target_sha256: str
    target_rows: int

    @property
    def ok(self) -> bool:
        """Counts and checksums agree."""
        return self.rows == self.target_rows and self.source_sha256 == self.target_sha256


def _cell(value: object) -> str:
    """One value, spelled the same whichever database it came from."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value).hex()
    return json.dumps(str(value), ensure_ascii=False)


async def _digest(rows: AsyncIterator[Any]) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    async for row in rows:
        h.update(("\x1f".join(_cell(v) for v in tuple(row)) + "\n").encode())
        n += 1
    return n, h.hexdigest()


def _select(table: str, columns: tuple[str, ...], key: tuple[str, ...], postgres: bool) -> str:
    collate = ' COLLATE "C"' if postgres else ""  # SQLite's BINARY order is byte order, as is "C" for UTF-8
    names = ", ".join(f'"{c}"' for c in columns)
    order = ", ".join(f'"{c}"' if c in INTEGER_KEYS and table != "queries" else f'"{c}"{collate}' for c in key)
    return f"SELECT {names} FROM {table} ORDER BY {order}"


INTEGER_KEYS = frozenset({"id", "sample_id", "space_id", "revision"})  # every other key column is text (queries.id too)


async def _sqlite_rows(store: SqliteStore, statement: str) -> AsyncIterator[Any]:
    async with store.db.execute(statement) as cursor:
        async for row in cursor:
            yield row


async def _target_rows(conn: Any, statement: str) -> AsyncIterator[Any]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(statement, prefetch=BATCH):
            yield row


async def migrate(
    source: Path, dsn: str, replace: bool = False, say: Callable[[str], None] = lambda line: None
) -> list[TableCheck]:
    """Copy every table of the SQLite file at source into the database at dsn (ids kept, sequences moved past
    them), then compare counts and checksums table by table; MigrateError if the target has rows (unless replace,
    which empties it first) or anything differs.
    """
    if not source.exists():
        raise MigrateError(f"there is no library at {source} to migrate")
    sqlite = await SqliteStore.open(source)  # brings it to the newest schema first
    try:
        target = await PostgresStore.open(dsn)
        try:
            async with target.pool.acquire() as conn:
                await _copy(sqlite, conn, dsn, replace, say)
                checks = await _verify(sqlite, conn)
        finally:
            await target.close()
    finally:
        await sqlite.close()
    for check in checks:
        say(f"  {check.table:<13} {check.rows:>9} rows  {'ok' if check.ok else 'DIFFERS'}  {check.source_sha256[:16]}")
    bad = [c.table for c in checks if not c.ok]
    if bad:
        raise MigrateError(f"the copy in {masked_url(dsn)} differs from {source} in: {', '.join(bad)}")
    say(f"verified: {len(checks)} tables, counts and sha256 checksums match")
    return checks


async def _copy(sqlite: SqliteStore, conn: Any, dsn: str, replace: bool, say: Callable[[str], None]) -> None:
    names = [table for table, _, _ in TABLES]
    async with conn.transaction():
        counts = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in names}
        filled = {t: n for t, n in counts.items() if n}
        if filled and not replace:
            listed = ", ".join(f"{t} ({n})" for t, n in filled.items())
            raise MigrateError(
                f"{masked_url(dsn)} already holds rows in {listed}; migrate into an empty database, "
                "or pass --replace to empty it first"
            )
        if filled:
            say(f"emptying {masked_url(dsn)} first (--replace)")
            await conn.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
        say(f"copying {sqlite.path} into {masked_url(dsn)}")
        for table, columns, key in TABLES:
            copied = 0
            batch: list[tuple[Any, ...]] = []
            async for row in _sqlite_rows(sqlite, _select(table, columns, key, postgres=False)):
                batch.append(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
                if len(batch) >= BATCH:
                    await conn.copy_records_to_table(table, records=batch, columns=list(columns))
                    copied, batch = copied + len(batch), []
            if batch:
                await conn.copy_records_to_table(table, records=batch, columns=list(columns))
                copied += len(batch)
            say(f"  {table:<13} {copied:>9} rows copied")
        tags = "coalesce((SELECT string_agg(t.tag, ' ') FROM tags t WHERE t.sample_id = s.id), '')"
        name = r"regexp_replace(s.name, '[_.\-]+', ' ', 'g')"
        await conn.execute(
            "UPDATE samples s SET search = " + SEARCH.format(name=name, tags=tags, description="s.description")
        )
        floor = await (await sqlite.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'")).fetchone()
        for table in SEQUENCES:
            highest = int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}"))
            if table == "samples" and floor is not None:
                highest = max(highest, int(floor[0]))  # ids of removed samples are never given out again
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence($1, 'id'), $2, $3)", table, max(highest, 1), highest > 0
            )


async def _verify(sqlite: SqliteStore, conn: Any) -> list[TableCheck]:
    checks = []
    for table, columns, key in TABLES:
        rows, source_sha = await _digest(_sqlite_rows(sqlite, _select(table, columns, key, postgres=False)))
        target_rows, target_sha = await _digest(_target_rows(conn, _select(table, columns, key, postgres=True)))
        checks.append(TableCheck(table, rows, source_sha, target_sha, target_rows))
    return checks
