"""Event edges snapped to band-level changes: the descriptor, its streaming, and the pure refinement."""

from __future__ import annotations

import numpy as np
import pytest

from core.edges import BANDS, FLOOR_DB, FRAME_SECONDS, Levels, band_levels, refine_edges
from core.timeline import Event
from tests.support.sounds import SR, noise, tone


def test_band_levels_put_a_tone_in_its_band_and_silence_on_the_floor() -> None:
    levels = band_levels(np.concatenate([tone(1.0, 1000.0), np.zeros(SR, np.float32)]), SR)
    assert levels.shape == (round(2.0 / FRAME_SECONDS), len(BANDS) - 1) and levels.dtype == np.float32
    band = int(np.searchsorted(BANDS, 1000.0)) - 1
    assert set(np.argmax(levels[5:45], axis=1).tolist()) == {band}
    assert np.all(levels[55:] == FLOOR_DB)


def test_streamed_levels_match_the_whole_whatever_the_chunks() -> None:
    samples = np.concatenate([noise(1.3, seed=1), tone(0.77, 300.0)])
    stream = Levels(SR)
    for lo, hi in ((0, 1000), (1000, 1001), (1001, 50_000), (50_000, len(samples))):
        stream.feed(samples[lo:hi])
    assert np.array_equal(stream.matrix(), band_levels(samples, SR))


def steps(seconds: float, changes: dict[float, float]) -> np.ndarray:
    """Levels of a recording whose bands all jump to a new level (dB) at each given time."""
    frames = round(seconds / FRAME_SECONDS)
    level = np.full(frames, -60.0, np.float32)
    for at, db in changes.items():
        level[round(at / FRAME_SECONDS) :] = db
    return np.repeat(level[:, None], len(BANDS) - 1, axis=1)


def test_an_edge_moves_to_the_clear_change_near_it_and_the_recording_ends_stay() -> None:
    levels = steps(10.0, {3.36: -20.0, 7.02: -60.0})
    found = refine_edges([Event("hum", 3.0, 7.5, 0.9), Event("quiet", 0.0, 3.5, 0.8)], levels, 1.0, 1.0, 10.0)
    assert found == [Event("quiet", 0.0, 3.36, 0.8), Event("hum", 3.36, 7.02, 0.9)]
    tail = refine_edges([Event("hum", 6.5, 10.0, 0.9)], levels, 1.0, 1.0, 10.0)
    assert tail == [Event("hum", 7.02, 10.0, 0.9)]  # the start moved; the end is the recording's end


def test_without_a_clear_change_or_beyond_reach_an_edge_stays() -> None:
    flat = steps(10.0, {5.0: -58.0})  # 2 dB: below the contrast an edge needs
    event = Event("speech", 4.6, 8.0, 0.7)
    assert refine_edges([event], flat, 1.0, 1.0, 10.0) == [event]
    far = steps(10.0, {2.0: -20.0})  # 2.6 s before the edge, out of a 1 s reach
    assert refine_edges([event], far, 1.0, 1.0, 10.0) == [event]


@pytest.mark.parametrize("minimum", [0.5, 2.0])
def test_an_edge_never_crosses_the_middle_nor_leaves_an_event_too_short(minimum: float) -> None:
    levels = steps(10.0, {4.4: -20.0, 5.6: -60.0})  # a 1.2 s sound found as 3.9-6.1
    event = Event("knock", 3.9, 6.1, 0.9)
    (found,) = refine_edges([event], levels, 1.0, minimum, 10.0)
    if minimum <= 1.2:
        assert (found.start, found.end) == (4.4, 5.6)
    else:
        assert found == event  # refined it would be shorter than the minimum: the windows' edges stay
