"""Consistency checks of a shira library: SQLite, FTS, segments, files on disk and FAISS must agree."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np


def _rows(db: sqlite3.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return db.execute(sql, args).fetchall()


def store_problems(data_dir: Path, allow_orphan_files: bool = False) -> list[str]:
    """Everything wrong with the database and the file store of a data dir (empty list: consistent)."""
    problems: list[str] = []
    db_path = Path(data_dir) / "shira.db"
    if not db_path.exists():
        return problems  # killed before the database was created: nothing to be inconsistent
    db = sqlite3.connect(db_path, timeout=10)
    try:
        integrity = [r[0] for r in _rows(db, "PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {integrity[:5]}")
        tables = {r[0] for r in _rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "samples" not in tables:
            return problems  # killed during the first migration, which rolled back
        if fk := _rows(db, "PRAGMA foreign_key_check"):
            problems.append(f"rows pointing at missing parents: {fk[:5]}")
        try:
            db.execute("INSERT INTO samples_fts(samples_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            problems.append(f"FTS index is corrupt: {exc}")
        samples = {r[0]: r[1:] for r in _rows(db, "SELECT id, sha256, ext, length(embedding) FROM samples")}
        fts = {r[0] for r in _rows(db, "SELECT rowid FROM samples_fts")}
        if fts != set(samples):
            problems.append(
                f"FTS rows and samples differ: only in FTS {sorted(fts - set(samples))[:5]},"
                f" only in samples {sorted(set(samples) - fts)[:5]}"
            )
        if "fingerprints" in tables:
            printed = {r[0] for r in _rows(db, "SELECT sample_id FROM fingerprints")}
            if missing := sorted(set(samples) - printed):
                problems.append(f"samples without fingerprints: {missing[:5]}")
            if stray := sorted(printed - set(samples)):
                problems.append(f"fingerprints of removed samples: {stray[:5]}")
        with_segments = {r[0] for r in _rows(db, "SELECT DISTINCT sample_id FROM segments")}
        if missing := sorted(set(samples) - with_segments):
            problems.append(f"samples without segments: {missing[:5]}")
        sizes = {r[0] for r in _rows(db, "SELECT DISTINCT length(embedding) FROM segments")} | {
            size for _, _, size in samples.values()
        }
        if len(sizes) > 1:
            problems.append(f"embeddings of different sizes: {sorted(sizes)}")
        if dup := _rows(db, "SELECT space_id, sha256, count(*) FROM samples GROUP BY 1, 2 HAVING count(*) > 1"):
            problems.append(f"duplicated samples: {dup[:5]}")
        names = [r[0] for r in _rows(db, "SELECT name FROM samples")]
        if bad := [n for n in names if "/" in n or "\\" in n or n in ("", ".", "..")]:
            problems.append(f"unsafe display names: {bad[:5]}")
    finally:
        db.close()
    problems += _file_problems(Path(data_dir) / "files", samples, allow_orphan_files)
    return problems


def _file_problems(root: Path, samples: dict[int, tuple[Any, ...]], allow_orphans: bool) -> list[str]:
    problems: list[str] = []
    wanted = {(sha, ext) for sha, ext, _ in samples.values()}
    for sha, ext in sorted(wanted):
        path = root / sha[:2] / f"{sha}{ext}"
        if not path.is_file():
            problems.append(f"file missing for a stored sample: {path.name}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            problems.append(f"stored file does not match its hash: {path.name}")
    on_disk = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    if parts := [p.name for p in on_disk if p.name.endswith(".part")]:
        problems.append(f"half-written files left behind: {parts[:5]}")
    if strays := [p for p in on_disk if p.parent.parent != root]:
        problems.append(f"files outside the content-addressed layout: {strays[:5]}")
    names = {f"{sha}{ext}" for sha, ext in wanted}
    orphans = [p.name for p in on_disk if not p.name.endswith(".part") and p.name not in names]
    if orphans and not allow_orphans:
        problems.append(f"files no sample refers to: {orphans[:5]}")
    return problems


def index_ids(index: Any) -> np.ndarray:
    """The sample ids held by a FaissIndex (IDMap2 or IVF)."""
    import faiss

    raw = index.index
    if hasattr(raw, "id_map"):
        return faiss.vector_to_array(raw.id_map).astype(np.int64)
    invlists = faiss.extract_index_ivf(raw).invlists
    ids = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)


async def engine_problems(engine: Any) -> list[str]:
    """FAISS and SQLite agree in an open engine: same ids per space, ntotal == count, same vectors."""
    problems: list[str] = []
    for space in await engine.store.spaces():
        await engine.library.ensure_index(space)  # what any search would do first
        ids, vectors = await engine.store.vectors(space)
        index = engine.indexes.get(space)
        if index is None:
            problems.append(f"{space}: no index")
            continue
        if len(index) != len(ids):
            problems.append(f"{space}: FAISS ntotal {len(index)} != {len(ids)} samples")
        held = index_ids(index)
        if sorted(held.tolist()) != sorted(ids.tolist()):
            problems.append(f"{space}: FAISS ids {sorted(held.tolist())[:8]} != sample ids {sorted(ids.tolist())[:8]}")
            continue
        if len(ids) and index.kind == "flat":
            stored = np.stack([index.index.reconstruct(int(i)) for i in ids])
            if not np.allclose(stored, vectors, atol=1e-6):
                problems.append(f"{space}: FAISS vectors differ from the stored embeddings")
    return problems


async def searchable_problems(engine: Any, space: str, expected: dict[int, str]) -> list[str]:
    """Each sample id is found by its unique description word and by its own vector."""
    problems: list[str] = []
    vectors = await engine.store.sample_vectors(list(expected))
    for sample_id, word in expected.items():
        if sample_id not in vectors:
            problems.append(f"#{sample_id} ({word}) is missing")
            continue
        hits, _ = await engine.searcher.search_text((space,), word, 5)
        if sample_id not in [h.sample_id for h in hits]:
            problems.append(f"#{sample_id} is not found by the word {word!r}: {[h.sample_id for h in hits]}")
        hits, _ = await engine.searcher.search_vector((space,), vectors[sample_id], "", 5, 0, "")
        if sample_id not in [h.sample_id for h in hits]:
            problems.append(f"#{sample_id} is not found by its own vector: {[h.sample_id for h in hits]}")
    return problems
