"""The inbox on a real database file: one commit per batch, redeliveries known, attempts counted, pruned."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core import inbox as inbox_module
from core.inbox import MAX_ATTEMPTS, InboxError, SqliteInbox
from core.store import MIGRATIONS, SqliteStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A database the store has migrated."""
    store = await SqliteStore.open(tmp_path / "shira.db")
    await store.close()
    return tmp_path / "shira.db"


def sql(db: Path, statement: str) -> list[tuple[object, ...]]:
    """Run one statement on its own connection, committed."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement).fetchall()


def rows(db: Path) -> list[tuple[object, ...]]:
    return sql(db, "SELECT platform, key, state, attempts FROM inbox ORDER BY rowid")


async def test_a_batch_is_journaled_once_and_redeliveries_are_known(db: Path) -> None:
    async with SqliteInbox.open(db) as inbox:
        assert await inbox.record("telegram", {"7": {"update_id": 7}, "8": {"update_id": 8}}) == {"7", "8"}
        assert await inbox.record("telegram", {"8": {"update_id": 8}, "9": {"update_id": 9}}) == {"9"}
        assert await inbox.record("discord", {"8": {"id": "8"}}) == {"8"}  # keys are unique per platform
        assert await inbox.record("telegram", {}) == set()
        await inbox.done("telegram", "8")
        await inbox.done("telegram", "404")  # unknown: nothing to mark
    assert sql(db, "SELECT key, payload FROM inbox WHERE platform = 'telegram'") == [
        ("7", '{"update_id":7}'),
        ("8", "{}"),  # answered: only the key is kept
        ("9", '{"update_id":9}'),
    ]
    assert rows(db) == [
        ("telegram", "7", "pending", 1),
        ("telegram", "8", "done", 1),
        ("telegram", "9", "pending", 1),
        ("discord", "8", "pending", 1),
    ]


async def test_pending_is_what_an_earlier_run_left_oldest_first(db: Path) -> None:
    async with SqliteInbox.open(db) as inbox:
        await inbox.record("telegram", {"1": {"text": "first", "n": [1, 2]}})
        await inbox.record("telegram", {"2": {"text": "second ✓"}})
        await inbox.record("telegram", {"3": {"text": "answered"}})
        await inbox.done("telegram", "3")
    async with SqliteInbox.open(db) as inbox:
        entries = await inbox.pending("telegram")
        assert await inbox.pending("discord") == []
    assert [(e.key, dict(e.payload), e.attempts) for e in entries] == [
        ("1", {"text": "first", "n": [1, 2]}, 2),
        ("2", {"text": "second ✓"}, 2),
    ]
    assert entries[0].platform == "telegram" and entries[0].received_at <= entries[1].received_at


async def test_a_request_that_kills_every_run_is_given_up(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with SqliteInbox.open(db) as inbox:
        await inbox.record("discord", {"poison": {"kind": "slash"}})
        attempts = [[e.attempts for e in await inbox.pending("discord")] for _ in range(MAX_ATTEMPTS)]
        with caplog.at_level(logging.WARNING, logger="core.inbox"):
            assert await inbox.pending("discord") == []
    assert attempts == [[n] for n in range(2, MAX_ATTEMPTS + 1)] + [[]]
    assert rows(db) == [("discord", "poison", "done", MAX_ATTEMPTS)]
    assert "giving up on discord request poison (3 attempts)" in caplog.text


async def test_an_unreadable_payload_is_dropped(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    sql(db, "INSERT INTO inbox (platform, key, received_at, payload) VALUES ('telegram', '5', 0, '[1')")
    async with SqliteInbox.open(db) as inbox:
        with caplog.at_level(logging.WARNING, logger="core.inbox"):
            assert await inbox.pending("telegram") == []
    assert "telegram request 5 (it can't be read)" in caplog.text
    assert rows(db) == [("telegram", "5", "done", 1)]


async def test_old_answered_requests_are_pruned_pending_ones_kept(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with SqliteInbox.open(db) as inbox:
        await inbox.record("telegram", {str(n): {} for n in range(6)})
        for n in range(4):
            await inbox.done("telegram", str(n))
        # two of them, one answered and one not, are two days old
        sql(db, "UPDATE inbox SET received_at = received_at - 172800 WHERE key IN ('0', '5')")
        assert await inbox.prune() == 1
        monkeypatch.setattr(inbox_module, "KEEP_DONE_ROWS", 2)
        assert await inbox.prune() == 1  # beyond the newest two answered ones
    assert [(key, state) for _, key, state, _ in rows(db)] == [
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


def test_a_journaled_request_survives_sigkill_at_once(db: Path) -> None:
    """SHIRA_CRASH_AT=journaled kills the process right after the commit: the next open still has the request."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from core.inbox import SqliteInbox\n"
        "async def main():\n"
        "    async with SqliteInbox.open(Path(sys.argv[1])) as inbox:\n"
        "        await inbox.record('telegram', {'42': {'update_id': 42}})\n"
        "        print('not killed')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "SHIRA_CRASH_AT": "journaled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == -9, proc.stderr
    assert "crash point journaled reached" in proc.stderr and "not killed" not in proc.stdout
    assert rows(db) == [("telegram", "42", "pending", 1)]


async def test_the_backlog_counts_what_is_taken_on_and_not_answered(db: Path) -> None:
    async with SqliteInbox.open(db) as inbox:
        await inbox.record("telegram", {"1": {"a": 1}, "2": {"a": 2}})
        await inbox.record("telegram", {"2": {"a": 2}, "3": {"a": 3}})  # 2 again: counted once
        assert inbox.backlog == 3
        await inbox.done("telegram", "1")
        await inbox.done("telegram", "1")  # twice: still one answer
        assert inbox.backlog == 2
    async with SqliteInbox.open(db) as inbox:
        assert inbox.backlog == 2  # what an earlier run left
