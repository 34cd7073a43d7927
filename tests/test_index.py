"""FAISS indexes: exact and IVF, removals, persistence and staleness."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.config import IndexConfig
from core.embedder import normalize
from core.index import FaissIndex, IndexSet, import_faiss


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, dim))
    return normalize(centres[rng.integers(0, 16, n)] + 0.3 * rng.standard_normal((n, dim)))


def test_flat_search_is_exact_and_removal_works() -> None:
    vectors = clustered(200)
    ids = np.arange(1000, 1200)
    index = FaissIndex.build(ids, vectors, 32, IndexConfig(approximate_above=1000))
    assert index.kind == "flat"
    top = index.search(vectors[17], 5)
    assert top[0][0] == 1017 and abs(top[0][1] - 1.0) < 1e-5
    expected = np.argsort(-(vectors @ vectors[17]))[:5] + 1000
    assert [i for i, _ in top] == expected.tolist()
    index.remove(np.array([1017]))
    assert len(index) == 199 and all(i != 1017 for i, _ in index.search(vectors[17], 10))


def test_a_search_runs_on_one_thread_and_leaves_the_callers_setting() -> None:
    faiss = import_faiss()
    vectors = clustered(300)
    index = FaissIndex.build(np.arange(300), vectors, 32, IndexConfig(approximate_above=1000))
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        expected = np.argsort(-(vectors @ vectors[5]))[:10].tolist()
        assert [i for i, _ in index.search(vectors[5], 10)] == expected
        assert faiss.omp_get_max_threads() == 2  # restored for builds on this thread
    finally:
        faiss.omp_set_num_threads(previous)


def test_ivf_beyond_the_threshold_has_high_recall_and_removes() -> None:
    vectors = clustered(3000)
    ids = np.arange(3000)
    index = FaissIndex.build(ids, vectors, 32, IndexConfig(approximate_above=500, nprobe=16))
    assert index.kind == "ivf"
    exact = vectors @ vectors[:50].T
    recall = []
    for q in range(50):
        truth = set(np.argsort(-exact[:, q])[:10].tolist())
        got = {i for i, _ in index.search(vectors[q], 10)}
        recall.append(len(truth & got) / 10)
    assert np.mean(recall) >= 0.9
    index.remove(np.array([0, 1, 2]))
    assert len(index) == 2997 and index.search(vectors[0], 1)[0][0] != 0


def test_index_set_saves_and_detects_staleness(tmp_path: Path) -> None:
    config = IndexConfig()
    vectors = clustered(20)
    ids = np.arange(1, 21)
    first = IndexSet(tmp_path, config)
    first.rebuild("space:1", ids, vectors, revision=20)
    assert first.remove("space:1", 5, revision=21)
    assert not first.remove("space:1", 6, revision=23)  # revision 22 came from another writer: out of step
    assert first.dirty() == ["space:1"]
    first.save("space:1")
    assert first.dirty() == []

    second = IndexSet(tmp_path, config)
    assert second.try_load("space:1", revision=21, count=19)
    assert len(second.get("space:1")) == 19
    assert not IndexSet(tmp_path, config).try_load("space:1", revision=22, count=19)  # store moved on
    assert not IndexSet(tmp_path, config).try_load("space:1", revision=21, count=20)
    assert not IndexSet(tmp_path, config).try_load("space:2", revision=0, count=0)


def test_outgrowing_the_exact_index_asks_for_a_rebuild(tmp_path: Path) -> None:
    indexes = IndexSet(tmp_path, IndexConfig(approximate_above=10))
    vectors = clustered(11)
    indexes.rebuild("s", np.arange(10), vectors[:10], revision=10)
    assert not indexes.needs_rebuild("s")
    assert indexes.add("s", 10, vectors[10], revision=11)
    assert indexes.needs_rebuild("s")
