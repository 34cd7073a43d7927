"""Ranking: vector search across spaces, lexical fusion, best-matching windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.index import IndexSet


def vector_candidates(indexes: IndexSet, spaces: Sequence[str], query: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n best (id, cosine) across these spaces' indexes, best first."""
    hits: list[tuple[int, float]] = []
    for space in spaces:
        index = indexes.get(space)
        if index is not None:
            hits.extend(index.search(query, n))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits[:n]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60) -> list[int]:
    """Fuse ranked id lists: score(id) = sum of 1 / (k + rank); ties keep first-list order."""
    scores: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for ranking in rankings:
        for rank, sample_id in enumerate(ranking, start=1):
            scores[sample_id] = scores.get(sample_id, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(sample_id, len(first_seen))
    return sorted(scores, key=lambda i: (-scores[i], first_seen[i]))


def best_window(query: np.ndarray, windows: list[tuple[float, float, np.ndarray]]) -> tuple[float, float]:
    """The (start, end) of the window most similar to the query."""
    if not windows:
        return 0.0, 0.0
    scores = [float(np.dot(vector, query)) for _, _, vector in windows]
    start, end, _ = windows[int(np.argmax(scores))]
    return start, end
