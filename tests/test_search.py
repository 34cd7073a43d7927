"""Ranking helpers, and pages of results on a real store and FAISS index checked against the long way round."""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.audio import MB, Limits
from core.config import IndexConfig, SearchConfig
from core.files import FileStore
from core.index import IndexSet
from core.library import Library
from core.messages import Hit
from core.previews import Previews
from core.search import Searcher, best_window, pool_size, reciprocal_rank_fusion
from core.store import NewSample, Store


def test_rrf_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3, 4], [4, 3, 9]], k=60)
    assert fused[0] in (3, 4) and set(fused) == {1, 2, 3, 4, 9}
    assert fused.index(4) < fused.index(1)


def test_rrf_single_list_keeps_order() -> None:
    assert reciprocal_rank_fusion([[5, 2, 8]]) == [5, 2, 8]


def test_best_window_picks_the_most_similar() -> None:
    q = np.array([1.0, 0.0], np.float32)
    windows = [
        (0.0, 10.0, np.array([0.0, 1.0])),
        (10.0, 20.0, np.array([0.9, 0.1])),
        (15.0, 25.0, np.array([0.5, 0.5])),
    ]
    assert best_window(q, windows) == (10.0, 20.0)
    assert best_window(q, []) == (0.0, 0.0)


DIM = 16
WORDS = "kick snare dry wet deep bright".split()
SPACES = ("a", "b")
Row = tuple[int, float, float, float, str | None]  # id, score, window start, window end, platform file id


class TextVectors:
    """A fake encoder: each text's vector is fixed up front; it yields once, as a trip through the job queue would."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    async def embed_text(self, text: str) -> np.ndarray:
        await asyncio.sleep(0)
        return self.vectors[text]

    def interactive(self) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass(frozen=True)
class Stored:
    """What the test put in for one sample."""

    vector: np.ndarray
    windows: list[tuple[float, float, np.ndarray]]
    file_id: str | None


def unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def library(store: Store, root: Path) -> Library:
    indexes = IndexSet(root / "index", IndexConfig())
    indexes.dim = DIM
    return Library(store, FileStore(root / "files"), indexes, Previews(root / "previews", MB), Limits(MB, 10.0, 10.0))


async def two_spaces(store: Store, rng: np.random.Generator) -> dict[int, Stored]:
    """100 samples in each of spaces a and b, named from WORDS, with three windows and mostly a file id each."""
    stored = {}
    for n in range(200):
        windows = [(float(s), float(s + 10), unit(rng)) for s in (0, 5, 10)]
        vector, file_id = unit(rng), f"file-{n}" if n % 3 else None
        name = f"{WORDS[n % 6]}_{WORDS[(n // 6) % 6]}_{n}.wav"
        sha = hashlib.sha256(str(n).encode()).hexdigest()
        new = NewSample(
            SPACES[n % 2], sha, ".wav", name, "u1", "", 20.0, "", vector, tuple(windows), (), "test", file_id
        )
        stored[(await store.add_sample(new)).sample_id] = Stored(vector, windows, file_id)
    return stored


async def long_way(
    store: Store, stored: dict[int, Stored], query: np.ndarray, text: str, page: int, exclude: int | None = None
) -> tuple[list[Row], bool]:
    """A page of 5 worked out the long way: every cosine, the store's word ranking, fusion, every window."""
    pool = pool_size(5, page) + (exclude is not None)
    cosines = {i: float(np.dot(s.vector, query)) for i, s in stored.items()}
    order = sorted(cosines, key=lambda i: (-cosines[i], i))[:pool]
    if text:
        order = reciprocal_rank_fusion([order, await store.lexical(list(SPACES), text, pool)])
    order = [i for i in order if i != exclude]
    rows = []
    for i in order[page * 5 : (page + 1) * 5]:
        start, end, _ = max(stored[i].windows, key=lambda w: float(np.dot(w[2], query)))
        rows.append((i, cosines[i], start, end, stored[i].file_id))
    return rows, len(order) > (page + 1) * 5


def assert_same(got: tuple[list[Hit], bool], want: tuple[list[Row], bool]) -> None:
    rows = [(h.sample_id, h.score, h.start, h.end, h.platform_file_id) for h in got[0]]
    assert [(i, start, end, f) for i, _, start, end, f in rows] == [(i, s, e, f) for i, _, s, e, f in want[0]]
    assert [r[1] for r in rows] == pytest.approx([r[1] for r in want[0]], abs=1e-5)
    assert got[1] == want[1]


async def test_pages_across_two_spaces_match_the_long_way_round(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    stored = await two_spaces(store, rng)
    texts = {"kick dry": unit(rng), "bright": unit(rng), "snare wet deep": unit(rng), "zzz": unit(rng)}
    searcher = Searcher(store, library(store, tmp_path), TextVectors(texts), SearchConfig())  # type: ignore[arg-type]
    by_words_alone = 0  # hits outside the vector pool, found by their words and scored from their stored vectors
    for text, query in texts.items():
        for page in range(3):
            want = await long_way(store, stored, query, text, page)
            assert_same(await searcher.search_text(SPACES, text, 5, page, "test"), want)
            assert_same(await searcher.search_vector(SPACES, query, text, 5, page, "test"), want)
            pool = sorted(stored, key=lambda i: -float(np.dot(stored[i].vector, query)))[: pool_size(5, page)]
            by_words_alone += sum(row[0] not in pool for row in want[0])
        top = want[0][0][0]
        want = await long_way(store, stored, query, text, 0, exclude=top)
        assert_same(await searcher.search_vector(SPACES, query, text, 5, 0, "test", exclude=top), want)
        assert_same(
            await searcher.search_vector(SPACES, query, "", 5, 1, "test"), await long_way(store, stored, query, "", 1)
        )
    assert by_words_alone > 0
    config = SearchConfig(hybrid=False)
    vectors_only = Searcher(store, library(store, tmp_path / "v"), TextVectors(texts), config)  # type: ignore[arg-type]
    want = await long_way(store, stored, texts["kick dry"], "", 0)
    assert_same(await vectors_only.search_text(SPACES, "kick dry", 5, 0, "test"), want)
