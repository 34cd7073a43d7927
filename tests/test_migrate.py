"""`shira migrate --to postgresql://…`: an embedded library copied into PostgreSQL, verified, never over rows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from core.inbox import SqliteInbox
from core.migrate import MigrateError, migrate
from core.pgstore import PostgresStore
from core.store import SavedQuery, SqliteStore
from tests.test_catchup import sample


async def embedded_library(path: Path) -> list[int]:
    """A SQLite library with a row in every table; the newest sample removed, so its id must stay used."""
    store = await SqliteStore.open(path)
    ids = []
    for n in range(6):
        row = sample("lib", n)
        if n == 2:
            row = dataclasses.replace(row, name="Thunder_Clap_01.wav", fingerprint=b"\x01\x02")
            row = dataclasses.replace(row, tags=(("Storm", 0.5, True),), platform="telegram", platform_file_id="F1")
        ids.append((await store.add_sample(row)).sample_id)
    await store.add_sample(sample("other", 7))
    await store.remove_sample(ids[-1])
    await store.add_space_label("lib", "kettle")
    await store.cache_texts("m", {"dog": np.ones(4, np.float32)})
    await store.set_meta("embedding_dim", "16")
    await store.save_query("q1", SavedQuery(("lib",), np.ones(16, np.float32), "rain", 5, "Results"))
    await store.close()
    async with SqliteInbox.open(path) as inbox:
        await inbox.record("telegram", {"1": {"update_id": 1}, "2": {"update_id": 2}})
        await inbox.done("telegram", "1")
    return ids


async def test_a_library_is_copied_with_its_ids_and_verified(tmp_path: Path, postgres_dsn: str) -> None:
    ids = await embedded_library(tmp_path / "shira.db")
    said: list[str] = []
    checks = await migrate(tmp_path / "shira.db", postgres_dsn, say=said.append)
    assert all(c.ok for c in checks) and {c.table: c.rows for c in checks}["samples"] == 6
    assert {c.table for c in checks if c.rows == 0} == set()  # every table had rows to compare
    assert said[-1] == "verified: 12 tables, counts and sha256 checksums match"
    sqlite, target = await SqliteStore.open(tmp_path / "shira.db"), await PostgresStore.open(postgres_dsn)
    try:
        assert await target.get_samples(ids) == await sqlite.get_samples(ids)
        assert (await target.segments(ids)).keys() == (await sqlite.segments(ids)).keys()
        assert await target.revision("lib") == await sqlite.revision("lib") == 7
        assert await target.lexical(["lib"], "thunder storm", 5) == [ids[2]]  # names and tags searchable
        assert await target.file_ids(ids, "telegram") == {ids[2]: "F1"}
        caught = await target.changes_since("lib", 3)
        assert caught is not None and caught.removed.tolist() == [ids[-1]]
        fresh = await target.add_sample(sample("lib", 40))
        assert fresh.sample_id == ids[-1] + 2 and fresh.revision == 8  # past the removed id and "other"'s
    finally:
        await sqlite.close()
        await target.close()


async def test_a_target_with_rows_is_refused_unless_replaced(tmp_path: Path, postgres_dsn: str) -> None:
    await embedded_library(tmp_path / "shira.db")
    await migrate(tmp_path / "shira.db", postgres_dsn)
    with pytest.raises(MigrateError, match=r"already holds rows in meta \(1\), spaces \(2\), samples \(6\).*--replace"):
        await migrate(tmp_path / "shira.db", postgres_dsn)
    checks = await migrate(tmp_path / "shira.db", postgres_dsn, replace=True)
    assert all(c.ok for c in checks)


async def test_a_copy_that_differs_is_reported(tmp_path: Path, postgres_dsn: str) -> None:
    from core import migrate as migrate_module

    await embedded_library(tmp_path / "shira.db")
    real_copy = migrate_module._copy

    async def copy_then_spoil(sqlite: SqliteStore, conn: object, *rest: object) -> None:
        await real_copy(sqlite, conn, *rest)  # type: ignore[arg-type]
        await conn.execute("UPDATE tags SET score = 0.25")  # type: ignore[attr-defined]

    migrate_module._copy = copy_then_spoil  # type: ignore[assignment]
    try:
        with pytest.raises(MigrateError, match="differs from .* in: tags"):
            await migrate(tmp_path / "shira.db", postgres_dsn)
    finally:
        migrate_module._copy = real_copy


def test_the_cli_migrates_and_says_so(tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.postgres_server import run_async

    run_async(embedded_library(tmp_path / "data" / "shira.db"))
    assert main(["--data-dir", str(tmp_path / "data"), "migrate", "--to", postgres_dsn, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["tables"]["samples"]["rows"] == 6
    assert main(["--data-dir", str(tmp_path / "data"), "migrate", "--to", postgres_dsn]) == 1
    assert "already holds rows" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path / "none"), "migrate", "--to", postgres_dsn]) == 1
    assert "there is no library at" in capsys.readouterr().err
