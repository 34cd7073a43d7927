"""Ranking helpers."""

from __future__ import annotations

import numpy as np

from core.search import best_window, reciprocal_rank_fusion


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
