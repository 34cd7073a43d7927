"""Index catch-up after another process's changes: the change log against a full rebuild (issue #13, item 3).

A space of --vectors random unit vectors is loaded straight into the store, this process builds its index, then a
second store connection (another process's view) makes --changes changes, half additions and half removals. The
figures: how long ensure_index takes to catch up from the log, and a full rebuild (snapshot and build) for
comparison. SQLite always; PostgreSQL too with --postgres SERVER_DSN (a database is created there and dropped).

    python -m bench.catchup [--vectors 100000] [--changes 1000] [--postgres postgresql://postgres@127.0.0.1:5432]

Prints its figures and writes them between the catchup markers of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import _cpuinfo, load_average
from bench.sections import block, write_section
from core.audio import MB, Limits
from core.config import IndexConfig, masked_url
from core.files import FileStore
from core.index import IndexSet
from core.library import Library
from core.previews import Previews
from core.store import NewSample, SqliteStore, Store, to_blob

RESULTS = Path(__file__).parent / "RESULTS.md"
SPACE = "bench"
DIM = 512
TARGET_SECONDS = 1.0


@dataclass(frozen=True)
class Run:
    """One backend's figures."""

    backend: str
    vectors: int
    changes: int
    kind: str
    write_seconds: float
    catch_up_seconds: float
    rebuild_seconds: float
    recall_caught_up: float  # recall@10 against exact search, of the caught-up index
    recall_rebuilt: float  # and of an index rebuilt from scratch


CLUSTERS = 1_000  # sounds come in families; uniform random vectors in 512 dimensions have no near neighbours


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n unit vectors around CLUSTERS fixed centres (the same centres for every call)."""
    centres = np.random.default_rng(12345).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    v = centres[rng.integers(0, CLUSTERS, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    """Mean share of the exact top 10 that an index found."""
    return float(np.mean([len(f & t) / len(t) for f, t in zip(found, truth, strict=True)]))


def new_sample(n: int, vector: np.ndarray) -> NewSample:
    sha = hashlib.sha256(b"bench-%d" % n).hexdigest()
    return NewSample(SPACE, sha, ".wav", f"sound_{n}.wav", "bench", "", 1.0, "", vector, ((0.0, 1.0, vector),))


def _rows(vectors: np.ndarray, space_id: int) -> list[tuple[Any, ...]]:
    now = time.time()
    return [
        (i + 1, space_id, hashlib.sha256(b"bench-%d" % i).hexdigest(), ".wav", f"sound_{i}.wav", "bench", "", 1.0, now,
         "", to_blob(v))
        for i, v in enumerate(vectors)
    ]  # fmt: skip


async def load_sqlite(store: SqliteStore, vectors: np.ndarray) -> None:
    """Rows and their log entries written straight into the SQLite file (add_sample would take minutes)."""
    space_id = await store._space_id(SPACE)
    assert space_id is not None
    n = len(vectors)
    async with store._transaction() as db:
        await db.executemany(
            "INSERT INTO samples (id, space_id, sha256, ext, name, uploader, description, duration, created_at,"
            " source, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(vectors, space_id),
        )
        await db.executemany(
            "INSERT INTO changes (space_id, revision, sample_id, op) VALUES (?, ?, ?, 'add')",
            [(space_id, i + 1, i + 1) for i in range(n)],
        )
        await db.execute("UPDATE spaces SET revision = ? WHERE id = ?", (n, space_id))


async def load_postgres(store: Any, vectors: np.ndarray) -> None:
    """Rows and their log entries copied straight into PostgreSQL."""
    n = len(vectors)
    async with store.pool.acquire() as conn, conn.transaction():
        space_id = await store._space_id(conn, SPACE)
        columns = ["id", "space_id", "sha256", "ext", "name", "uploader", "description", "duration", "created_at"]
        await conn.copy_records_to_table(
            "samples", records=_rows(vectors, space_id), columns=[*columns, "source", "embedding"]
        )
        await conn.copy_records_to_table(
            "changes", records=[(space_id, i + 1, i + 1, "add") for i in range(n)],
            columns=["space_id", "revision", "sample_id", "op"],
        )  # fmt: skip
        await conn.execute("UPDATE spaces SET revision = $1 WHERE id = $2", n, space_id)
        await conn.execute("SELECT setval(pg_get_serial_sequence('samples', 'id'), $1)", n)


def library(store: Store, root: Path) -> Library:
    indexes = IndexSet(root / "index", IndexConfig())
    indexes.dim = DIM
    return Library(store, FileStore(root / "files"), indexes, Previews(root / "previews", MB), Limits(MB, 10.0, 10.0))


def top10(lib: Library, queries: np.ndarray) -> list[set[int]]:
    index = lib.indexes.get(SPACE)
    assert index is not None
    return [{i for i, _ in index.search(q, 10)} for q in queries]


async def measure(backend: str, first: Store, second: Store, root: Path, vectors: int, changes: int) -> Run:
    rng = np.random.default_rng(0)
    data = unit_vectors(rng, vectors)
    if isinstance(first, SqliteStore):
        await load_sqlite(first, data)
    else:
        await load_postgres(first, data)
    lib = library(first, root)
    await lib.load_indexes()  # built from the store: what a frontend has loaded
    built = lib.indexes.entries[SPACE].index
    # Another process: half additions, half removals of old samples.
    adds, removes = changes - changes // 2, changes // 2
    fresh = unit_vectors(rng, adds)
    started = time.perf_counter()
    for n in range(adds):
        await second.add_sample(new_sample(vectors + n, fresh[n]))
    for sample_id in rng.choice(np.arange(1, vectors + 1), removes, replace=False):
        await second.remove_sample(int(sample_id))
    write_seconds = time.perf_counter() - started

    started = time.perf_counter()
    await lib.ensure_index(SPACE)
    catch_up = time.perf_counter() - started
    assert lib.indexes.entries[SPACE].index is built, "ensure_index rebuilt instead of catching up"
    assert len(built) == await first.count(SPACE) == vectors + adds - removes

    queries = unit_vectors(np.random.default_rng(1), 50)
    ids, stored = await first.vectors(SPACE)
    exact = [set(ids[np.argsort(-(stored @ q))[:10]].tolist()) for q in queries]
    caught = top10(lib, queries)
    started = time.perf_counter()
    async with lib._lock:
        await lib._rebuild(SPACE)
    rebuild = time.perf_counter() - started
    again = top10(lib, queries)
    return Run(
        backend, vectors, changes, built.kind, write_seconds, catch_up, rebuild, recall(caught, exact),
        recall(again, exact),
    )  # fmt: skip


async def run_sqlite(vectors: int, changes: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="shira-catchup-") as tmp:
        root = Path(tmp)
        first, second = await SqliteStore.open(root / "shira.db"), await SqliteStore.open(root / "shira.db")
        try:
            return await measure("SQLite", first, second, root, vectors, changes)
        finally:
            await first.close()
            await second.close()


async def run_postgres(server: str, vectors: int, changes: int) -> Run:
    import asyncpg

    from core.pgstore import PostgresStore

    name = f"shira_catchup_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{server}/postgres", timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="shira-catchup-") as tmp:
            first, second = await PostgresStore.open(f"{server}/{name}"), await PostgresStore.open(f"{server}/{name}")
            try:
                return await measure("PostgreSQL", first, second, Path(tmp), vectors, changes)
            finally:
                await first.close()
                await second.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def report(runs: list[Run], command: str, postgres: str) -> str:
    cpu, _ = _cpuinfo()
    load = load_average()
    lines = [
        "## Index catch-up after another process's changes",
        "",
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores "
        f"(load average {load[0]:.1f} at the end, shared with other work); PostgreSQL: "
        f"{masked_url(postgres) + ' (fsync off: a throwaway test cluster)' if postgres else 'not measured'}.",
        "",
        "A frontend holds a space's index; another process makes the changes (half additions, half removals, one "
        "transaction each); then `Library.ensure_index` brings the index up to the store's revision from the "
        "change log (`Store.changes_since`). A full rebuild (one snapshot read, then build) is shown beside it. "
        f"Target: catch-up <= {TARGET_SECONDS:g} s.",
        "",
        "| store | vectors | changes | index | other process's writes | catch-up | full rebuild | recall@10 "
        "caught-up / rebuilt | target |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        met = "**met**" if r.catch_up_seconds <= TARGET_SECONDS else "**not met**"
        lines.append(
            f"| {r.backend} | {r.vectors:,} | {r.changes:,} | {r.kind} | {r.write_seconds:.1f} s "
            f"({r.changes / r.write_seconds:.0f}/s) | **{r.catch_up_seconds * 1000:.0f} ms** | "
            f"{r.rebuild_seconds:.1f} s | {r.recall_caught_up:.1%} / {r.recall_rebuilt:.1%} | {met} |"
        )
    lines += [
        "",
        f"Vectors are unit vectors around {CLUSTERS:,} random centres (families of similar sounds); recall@10 is "
        "measured against exact search over the store's vectors after the changes, for 50 queries. The caught-up "
        "index keeps its IVF training (it is rebuilt once it grows fourfold, as with additions made in-process).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.catchup", description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=1_000)
    parser.add_argument("--postgres", default=os.environ.get("SHIRA_BENCH_POSTGRES", ""), help="server DSN, no db")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    runs = [asyncio.run(run_sqlite(args.vectors, args.changes))]
    print(runs[-1], flush=True)
    if args.postgres:
        runs.append(asyncio.run(run_postgres(args.postgres.rstrip("/"), args.vectors, args.changes)))
        print(runs[-1], flush=True)
    command = f"python -m bench.catchup --vectors {args.vectors} --changes {args.changes}"
    text = report(runs, command + (" --postgres …" if args.postgres else ""), args.postgres)
    print(text)
    if not args.no_write:
        write_section(block("catchup", text))


if __name__ == "__main__":
    main()
