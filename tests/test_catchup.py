"""The change log on both stores, and indexes caught up from it when another connection changed the library."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import changes as changes_module
from core.audio import MB, Limits
from core.config import Config, IndexConfig
from core.engine import open_store
from core.files import FileStore
from core.index import IndexSet
from core.library import Library
from core.previews import Previews
from core.store import NewSample, Store
from tests.support.raw_sql import fetch

DIM = 16
ROOT = Path(__file__).resolve().parents[1]


def sample(space: str, n: int) -> NewSample:
    rng = np.random.default_rng(n)
    vector = rng.standard_normal(DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    sha = hashlib.sha256(f"{space}-{n}".encode()).hexdigest()
    return NewSample(space, sha, ".wav", f"sound_{n}.wav", "u1", "", 1.0, "", vector, ((0.0, 1.0, vector),))


def library(store: Store, root: Path, config: IndexConfig | None = None) -> Library:
    indexes = IndexSet(root / "index", config or IndexConfig())
    indexes.dim = DIM
    return Library(store, FileStore(root / "files"), indexes, Previews(root / "previews", MB), Limits(MB, 10.0, 10.0))


def results(lib: Library, space: str) -> list[list[tuple[int, float]]]:
    index = lib.indexes.get(space)
    assert index is not None
    queries = np.random.default_rng(99).standard_normal((8, DIM)).astype(np.float32)
    return [[(i, round(s, 5)) for i, s in index.search(q, 10)] for q in queries]


async def rebuilt(store: Store, root: Path, space: str) -> list[list[tuple[int, float]]]:
    """The same space's results from an index built from scratch."""
    fresh = library(store, root / "fresh")
    await fresh.ensure_index(space)
    return results(fresh, space)


async def test_the_log_says_what_changed_since_a_revision(store: Store) -> None:
    ids = [(await store.add_sample(sample("a", n))).sample_id for n in range(3)]
    await store.add_sample(sample("b", 9))  # another space: not in a's log
    gone = await store.remove_sample(ids[0])
    assert gone is not None and gone.revision == 4
    since0 = await store.changes_since("a", 0)
    assert since0 is not None and (since0.since, since0.revision, since0.count) == (0, 4, 2)
    assert since0.removed.tolist() == [ids[0]] and since0.added.tolist() == ids[1:]  # added then removed: dropped
    vectors = await store.sample_vectors(ids[1:])
    assert np.array_equal(since0.vectors, np.stack([vectors[i] for i in ids[1:]]))
    since2 = await store.changes_since("a", 2)
    assert since2 is not None and since2.added.tolist() == [ids[2]] and since2.removed.tolist() == [ids[0]]
    now = await store.changes_since("a", 4)
    assert now is not None and len(now.added) == len(now.removed) == 0 and now.revision == 4
    assert await store.changes_since("nowhere", 0) is None
    await store.rename_space("b", "a")  # many samples at once: the log can't say which, so it says nothing
    assert await store.changes_since("a", 4) is None


async def test_a_trimmed_log_tells_only_what_it_still_holds(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "KEEP", 3)
    monkeypatch.setattr(changes_module, "TRIM_EVERY", 5)
    for n in range(6):
        await store.add_sample(sample("a", n))
    assert await fetch(store, "SELECT count(*) FROM changes") == [(4,)]  # trimmed at revision 5 down to 3..5, then 6
    assert await store.changes_since("a", 1) is None
    kept = await store.changes_since("a", 2)
    assert kept is not None and len(kept.added) == 4 and kept.count == 6


async def test_an_index_catches_up_with_another_connections_changes(
    backend_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await open_store(backend_config), await open_store(backend_config)
    try:
        lib = library(first, tmp_path)
        added = [await lib.add(sample("s", n), b"RIFF%d" % n) for n in range(40)]
        await lib.ensure_index("s")
        built = lib.indexes.entries["s"].index
        # Another process adds and removes while this one's index sits loaded.
        theirs = [(await second.add_sample(sample("s", 100 + n))).sample_id for n in range(25)]
        for change in added[:10]:
            await second.remove_sample(change.sample_id)
        await second.remove_sample(theirs[0])
        with caplog.at_level(logging.INFO, logger="core.library"):
            await lib.ensure_index("s")
        assert lib.indexes.entries["s"].index is built  # the same index object, caught up, not rebuilt
        assert "caught s up from rev 40 to 76" in caplog.text
        assert len(built) == 40 - 10 + 24 == await first.count("s")
        assert results(lib, "s") == await rebuilt(first, tmp_path, "s")
        # And this process's own next addition, out of step with the index, catches up the same way.
        await second.add_sample(sample("s", 500))
        mine = await lib.add(sample("s", 501), b"RIFF501")
        assert lib.indexes.entries["s"].index is built and lib.indexes.revision("s") == mine.revision
        assert results(lib, "s") == await rebuilt(first, tmp_path, "s")
    finally:
        await first.close()
        await second.close()


async def test_without_a_log_to_follow_the_index_is_rebuilt(backend_config: Config, tmp_path: Path) -> None:
    first, second = await open_store(backend_config), await open_store(backend_config)
    try:
        lib = library(first, tmp_path)
        for n in range(5):
            await lib.add(sample("s", n), b"RIFF%d" % n)
        built = lib.indexes.entries["s"].index
        await second.add_sample(sample("s", 50))
        await second.add_sample(sample("s", 51))
        if hasattr(second, "db"):
            await second.db.execute("DELETE FROM changes")  # type: ignore[attr-defined]
        else:
            await second.pool.execute("DELETE FROM changes")  # type: ignore[attr-defined]
        await lib.ensure_index("s")
        assert lib.indexes.entries["s"].index is not built and len(lib.indexes.get("s") or []) == 7
        assert results(lib, "s") == await rebuilt(first, tmp_path, "s")
    finally:
        await first.close()
        await second.close()


async def test_a_saved_index_behind_the_store_is_caught_up_at_start(backend_config: Config, tmp_path: Path) -> None:
    first = await open_store(backend_config)
    lib = library(first, tmp_path)
    ids = [(await lib.add(sample("s", n), b"RIFF%d" % n)).sample_id for n in range(12)]
    await lib.flush()  # saved at revision 12
    for n in range(3):
        await first.add_sample(sample("s", 200 + n))  # while this process is down, another adds...
    await first.remove_sample(ids[4])  # ...and removes
    await first.close()
    reopened = await open_store(backend_config)
    try:
        lib = library(reopened, tmp_path)
        rebuilds: list[str] = []
        real_rebuild = lib.indexes.rebuild
        lib.indexes.rebuild = lambda space, *rest: (rebuilds.append(space), real_rebuild(space, *rest))[1]  # type: ignore[method-assign]
        await lib.load_indexes()
        assert rebuilds == [] and lib.indexes.revision("s") == 16 and len(lib.indexes.get("s") or []) == 14
        assert results(lib, "s") == await rebuilt(reopened, tmp_path, "s")
    finally:
        await reopened.close()


async def test_an_ivf_index_catches_up_too(backend_config: Config, tmp_path: Path) -> None:
    config = IndexConfig(approximate_above=16, nprobe=64, ivf_codec="flat")
    first, second = await open_store(backend_config), await open_store(backend_config)
    try:
        lib = library(first, tmp_path, config)
        for n in range(40):
            await lib.add(sample("s", n), b"RIFF%d" % n)
        assert lib.indexes.entries["s"].index.kind == "ivf"
        built = lib.indexes.entries["s"].index
        for n in range(10):
            await second.add_sample(sample("s", 300 + n))
        await second.remove_sample(1)
        await lib.ensure_index("s")
        assert lib.indexes.entries["s"].index is built and len(built) == 49
    finally:
        await first.close()
        await second.close()


def test_another_process_changes_are_caught_up(backend_config: Config, tmp_path: Path) -> None:
    """A second process (the store chosen from SHIRA_DATA_DIR / SHIRA_POSTGRES_DSN) adds and removes meanwhile."""
    code = (
        "import asyncio, os\n"
        "from core.config import load_config\n"
        "from core.engine import open_store\n"
        "from tests.test_catchup import sample\n"
        "async def main():\n"
        "    store = await open_store(load_config(None))\n"
        "    ids = [(await store.add_sample(sample('s', n))).sample_id for n in range(100, 106)]\n"
        "    await store.remove_sample(2)\n"
        "    await store.remove_sample(ids[2])\n"  # one of its own: added then removed, never in the index
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIRA_DATA_DIR": str(backend_config.data_dir)}
    env["SHIRA_POSTGRES_DSN"] = backend_config.cluster.postgres_dsn

    async def before() -> tuple[Library, Store]:
        store = await open_store(backend_config)
        lib = library(store, tmp_path)
        for n in range(30):
            await lib.add(sample("s", n), b"RIFF%d" % n)
        return lib, store

    async def after(lib: Library, store: Store) -> tuple[bool, int, bool]:
        built = lib.indexes.entries["s"].index
        await lib.ensure_index("s")
        try:
            same = results(lib, "s") == await rebuilt(store, tmp_path, "s")
            return lib.indexes.entries["s"].index is built, len(built), same
        finally:
            await store.close()

    loop = asyncio.new_event_loop()
    try:
        lib, store = loop.run_until_complete(before())
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert loop.run_until_complete(after(lib, store)) == (True, 30 + 6 - 2, True)
    finally:
        loop.close()
