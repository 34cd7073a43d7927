"""Run one SQL statement on either store's own connection, for tests that look under the protocol."""

from __future__ import annotations

from core.store import SqliteStore, Store


async def fetch(store: Store, statement: str) -> list[tuple[object, ...]]:
    """All rows of a statement both SQLite and PostgreSQL understand."""
    if isinstance(store, SqliteStore):
        return [tuple(r) for r in await (await store.db.execute(statement)).fetchall()]
    return [tuple(r) for r in await store.pool.fetch(statement)]  # type: ignore[attr-defined]
