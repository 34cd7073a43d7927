"""The inbox on a real database (SQLite file, PostgreSQL server): one commit per batch, redeliveries known,
attempts counted, pruned."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core import inbox as inbox_module
from core.config import ClusterConfig, Config
from core.engine import open_store
from core.inbox import MAX_ATTEMPTS, InboxError, PostgresInbox, SqliteInbox
from core.store import MIGRATIONS, SqliteStore
from tests.conftest import make_config
from tests.support.postgres_server import run_async

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Journal:
    """Where an inbox lives: a SQLite file or a PostgreSQL database, with a way to look at its table directly."""

    backend: str
    target: str  # the file's path or the DSN

    def open(self) -> AbstractAsyncContextManager[Any]:
        if self.backend == "sqlite":
            return SqliteInbox.open(Path(self.target))
        return PostgresInbox.open(self.target)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run one statement on its own connection, committed."""
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as conn, conn:
                return conn.execute(statement).fetchall()

        async def run() -> list[tuple[object, ...]]:
            import asyncpg

            conn = await asyncpg.connect(self.target)
            try:
                return [tuple(r) for r in await conn.fetch(statement)]
            finally:
                await conn.close()

        return run_async(run())


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A SQLite database the store has migrated."""
    store = await SqliteStore.open(tmp_path / "shira.db")
    await store.close()
    return tmp_path / "shira.db"


@pytest.fixture
async def journal(backend_config: Config) -> Journal:
    """A database of either backend the store has migrated."""
    store = await open_store(backend_config)
    await store.close()
    if backend_config.cluster.postgres_dsn:
        return Journal("postgres", backend_config.cluster.postgres_dsn)
    return Journal("sqlite", str(Path(backend_config.data_dir) / "shira.db"))


def sql(db: Path, statement: str) -> list[tuple[object, ...]]:
    """Run one statement on its own SQLite connection, committed."""
    return Journal("sqlite", str(db)).sql(statement)


def rows(journal: Journal) -> list[tuple[object, ...]]:
    order = "rowid" if journal.backend == "sqlite" else "seq"
    return journal.sql(f"SELECT platform, key, state, attempts FROM inbox ORDER BY {order}")


async def test_a_batch_is_journaled_once_and_redeliveries_are_known(journal: Journal) -> None:
    async with journal.open() as inbox:
        assert await inbox.record("telegram", {"7": {"update_id": 7}, "8": {"update_id": 8}}) == {"7", "8"}
        assert await inbox.record("telegram", {"8": {"update_id": 8}, "9": {"update_id": 9}}) == {"9"}
        assert await inbox.record("discord", {"8": {"id": "8"}}) == {"8"}  # keys are unique per platform
        assert await inbox.record("telegram", {}) == set()
        await inbox.done("telegram", "8")
        await inbox.done("telegram", "404")  # unknown: nothing to mark
    assert journal.sql("SELECT key, payload FROM inbox WHERE platform = 'telegram' ORDER BY key") == [
        ("7", '{"update_id":7}'),
        ("8", "{}"),  # answered: only the key is kept
        ("9", '{"update_id":9}'),
    ]
    assert rows(journal) == [
        ("telegram", "7", "pending", 1),
        ("telegram", "8", "done", 1),
        ("telegram", "9", "pending", 1),
        ("discord", "8", "pending", 1),
    ]


async def test_pending_is_what_an_earlier_run_left_oldest_first(journal: Journal) -> None:
    async with journal.open() as inbox:
        await inbox.record("telegram", {"1": {"text": "first", "n": [1, 2]}})
        await inbox.record("telegram", {"2": {"text": "second ✓"}})
        await inbox.record("telegram", {"3": {"text": "answered"}})
        await inbox.done("telegram", "3")
    async with journal.open() as inbox:
        entries = await inbox.pending("telegram")
        assert await inbox.pending("discord") == []
    assert [(e.key, dict(e.payload), e.attempts) for e in entries] == [
        ("1", {"text": "first", "n": [1, 2]}, 2),
        ("2", {"text": "second ✓"}, 2),
    ]
    assert entries[0].platform == "telegram" and entries[0].received_at <= entries[1].received_at


async def test_a_request_that_kills_every_run_is_given_up(journal: Journal, caplog: pytest.LogCaptureFixture) -> None:
    async with journal.open() as inbox:
        await inbox.record("discord", {"poison": {"kind": "slash"}})
        attempts = [[e.attempts for e in await inbox.pending("discord")] for _ in range(MAX_ATTEMPTS)]
        with caplog.at_level(logging.WARNING, logger="core.inbox"):
            assert await inbox.pending("discord") == []
    assert attempts == [[n] for n in range(2, MAX_ATTEMPTS + 1)] + [[]]
    assert rows(journal) == [("discord", "poison", "done", MAX_ATTEMPTS)]
    assert "giving up on discord request poison (3 attempts)" in caplog.text


async def test_an_unreadable_payload_is_dropped(journal: Journal, caplog: pytest.LogCaptureFixture) -> None:
    journal.sql("INSERT INTO inbox (platform, key, received_at, payload) VALUES ('telegram', '5', 0, '[1')")
    async with journal.open() as inbox:
        with caplog.at_level(logging.WARNING, logger="core.inbox"):
            assert await inbox.pending("telegram") == []
    assert "telegram request 5 (it can't be read)" in caplog.text
    assert rows(journal) == [("telegram", "5", "done", 1)]


async def test_old_answered_requests_are_pruned_pending_ones_kept(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with journal.open() as inbox:
        await inbox.record("telegram", {str(n): {} for n in range(6)})
        for n in range(4):
            await inbox.done("telegram", str(n))
        # two of them, one answered and one not, are two days old
        journal.sql("UPDATE inbox SET received_at = received_at - 172800 WHERE key IN ('0', '5')")
        assert await inbox.prune() == 1
        monkeypatch.setattr(inbox_module, "KEEP_DONE_ROWS", 2)
        assert await inbox.prune() == 1  # beyond the newest two answered ones
    assert [(key, state) for _, key, state, _ in rows(journal)] == [
        ("2", "done"),
        ("3", "done"),
        ("4", "pending"),
        ("5", "pending"),
    ]


async def test_commits_are_durable_and_the_table_comes_from_the_store(db: Path, tmp_path: Path) -> None:
    async with SqliteInbox.open(db) as inbox:
        (level,) = await (await inbox.db.execute("PRAGMA synchronous")).fetchone()  # type: ignore[misc]
        (mode,) = await (await inbox.db.execute("PRAGMA journal_mode")).fetchone()  # type: ignore[misc]
    assert (level, mode) == (2, "wal")  # FULL: a journaled request survives a power cut too
    sql(tmp_path / "bare.db", "CREATE TABLE t (x)")
    with pytest.raises(InboxError, match="open the store first"):
        async with SqliteInbox.open(tmp_path / "bare.db"):
            pass


async def test_a_database_from_before_the_inbox_gains_it(db: Path) -> None:
    before = next(n for n, script in enumerate(MIGRATIONS) if "CREATE TABLE inbox" in script)  # v4 today
    sql(db, "DROP TABLE inbox")
    sql(db, f"PRAGMA user_version = {before}")
    store = await SqliteStore.open(db)
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    async with SqliteInbox.open(db) as inbox:
        assert await inbox.record("telegram", {"1": {}}) == {"1"}


def test_a_journaled_request_survives_sigkill_at_once(journal: Journal) -> None:
    """SHIRA_CRASH_AT=journaled kills the process right after the commit: the next open still has the request."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from core.inbox import PostgresInbox, SqliteInbox\n"
        "async def main():\n"
        "    sqlite = sys.argv[1] == 'sqlite'\n"
        "    opened = SqliteInbox.open(Path(sys.argv[2])) if sqlite else PostgresInbox.open(sys.argv[2])\n"
        "    async with opened as inbox:\n"
        "        await inbox.record('telegram', {'42': {'update_id': 42}})\n"
        "        print('not killed')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "SHIRA_CRASH_AT": "journaled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, journal.backend, journal.target], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == -9, proc.stderr
    assert "crash point journaled reached" in proc.stderr and "not killed" not in proc.stdout
    assert rows(journal) == [("telegram", "42", "pending", 1)]


async def test_the_backlog_counts_what_is_taken_on_and_not_answered(journal: Journal) -> None:
    async with journal.open() as inbox:
        await inbox.record("telegram", {"1": {"a": 1}, "2": {"a": 2}})
        await inbox.record("telegram", {"2": {"a": 2}, "3": {"a": 3}})  # 2 again: counted once
        assert inbox.backlog == 3
        await inbox.done("telegram", "1")
        await inbox.done("telegram", "1")  # twice: still one answer
        assert inbox.backlog == 2
    async with journal.open() as inbox:
        assert inbox.backlog == 2  # what an earlier run left


async def test_a_postgres_database_the_store_never_migrated_has_no_inbox(postgres_dsn: str) -> None:
    with pytest.raises(InboxError, match="open the store first"):
        async with PostgresInbox.open(postgres_dsn):
            pass


async def test_frontends_sharing_a_postgres_inbox_replay_only_their_own(
    postgres_dsn: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(tmp_path, tiny_model_dir)
    store = await open_store(dataclasses.replace(config, cluster=ClusterConfig(postgres_dsn=postgres_dsn)))
    await store.close()
    async with PostgresInbox.open(postgres_dsn, "fe1") as one, PostgresInbox.open(postgres_dsn, "fe2") as two:
        assert await one.record("telegram", {"1": {"n": 1}}) == {"1"}
        assert await two.record("telegram", {"1": {"n": 1}, "2": {"n": 2}}) == {"2"}  # one journaled update 1
        assert [e.key for e in await one.pending("telegram")] == ["1"]
        assert [e.key for e in await two.pending("telegram")] == ["2"]
    async with PostgresInbox.open(postgres_dsn, "fe1") as restarted:  # the same frontend, after a restart
        assert [e.key for e in await restarted.pending("telegram")] == ["1"]
