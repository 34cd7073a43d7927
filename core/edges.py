"""Sharper event edges: a timeline's edges, known from CLAP windows to about a window, snapped to the nearest clear
change in the sound's band levels (20 ms frames), where there is one."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from core.timeline import Event

FRAME_SECONDS = 0.02
BANDS = np.geomspace(50.0, 16000.0, 9)  # 8 bands, log-spaced: tones, hum, hiss and voices fall in different ones
FLOOR_DB = -100.0  # digital silence sits here, not at minus infinity
MIN_CONTRAST_DB = 6.0  # below this RMS level change across the bands, an edge keeps its window-based time
SLICE_FRAMES = 512  # frames transformed at once: bounds the memory a long chunk costs


def band_levels(samples: np.ndarray, rate: int) -> np.ndarray:
    """Level in dB of each band per whole 20 ms frame of samples, (frames, bands) float32; a partial frame is left."""
    size = round(FRAME_SECONDS * rate)
    frames = len(samples) // size
    window = np.hanning(size)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    bins = np.searchsorted(freqs, BANDS)
    out = np.empty((frames, len(BANDS) - 1), np.float32)
    for lo in range(0, frames, SLICE_FRAMES):
        hi = min(frames, lo + SLICE_FRAMES)
        block = np.asarray(samples[lo * size : hi * size], dtype=np.float64).reshape(hi - lo, size) * window
        power = np.abs(np.fft.rfft(block, axis=1)) ** 2 / size
        per_band = np.add.reduceat(power, bins[:-1], axis=1)[:, : len(BANDS) - 1]
        out[lo:hi] = np.maximum(10 * np.log10(per_band + 1e-12), FLOOR_DB)
    return out


class Levels:
    """Band levels of a stream fed chunk by chunk (chunks of any length; the frames line up across them)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._size = round(FRAME_SECONDS * rate)
        self._tail = np.zeros(0, np.float32)
        self._parts: list[np.ndarray] = []

    def feed(self, chunk: np.ndarray) -> None:
        """Add the next samples."""
        data = np.concatenate([self._tail, chunk]) if len(self._tail) else chunk
        whole = len(data) // self._size * self._size
        self._parts.append(band_levels(data[:whole], self.rate))
        self._tail = np.array(data[whole:], dtype=np.float32)

    def matrix(self) -> np.ndarray:
        """Every whole frame's levels so far, (frames, bands)."""
        return np.concatenate(self._parts) if self._parts else np.zeros((0, len(BANDS) - 1), np.float32)


def best_split(levels: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """The frame in (lo, hi) that best splits levels[lo:hi] into two steady parts, and the RMS dB change there."""
    part = np.asarray(levels[lo:hi], dtype=np.float64)
    n = len(part)
    if n < 4:
        return lo, 0.0
    sums = np.cumsum(part, axis=0)[:-1]
    k = np.arange(1, n)[:, None]
    left, right = sums / k, (sums[-1] + part[-1] - sums) / (n - k)
    gain = (k[:, 0] * (n - k[:, 0]) / n) * ((left - right) ** 2).sum(axis=1)  # between-part scatter
    best = int(np.argmax(gain))
    return lo + best + 1, float(np.sqrt(np.mean((left[best] - right[best]) ** 2)))


def refine_edges(
    found: Sequence[Event], levels: np.ndarray, reach: float, min_event_seconds: float, duration: float
) -> list[Event]:
    """Each event's start and end moved to the clearest level change within reach seconds, if one is clear.

    An edge at the very start or end of the recording stays; an edge moves at most to the event's middle, and an
    event that would come out shorter than min_event_seconds keeps its window-based edges.
    """
    out = []
    frames = len(levels)
    span = round(reach / FRAME_SECONDS)

    def snapped(at: float, lo_limit: float, hi_limit: float) -> float:
        if at <= FRAME_SECONDS or at >= duration - FRAME_SECONDS:
            return at
        centre = round(at / FRAME_SECONDS)
        lo = max(0, centre - span, round(lo_limit / FRAME_SECONDS))
        hi = min(frames, centre + span, round(hi_limit / FRAME_SECONDS))
        split, contrast = best_split(levels, lo, hi)
        return split * FRAME_SECONDS if contrast >= MIN_CONTRAST_DB else at

    for event in found:
        middle = (event.start + event.end) / 2
        start = snapped(event.start, 0.0, middle)
        end = snapped(event.end, middle, duration)
        if end - start < min_event_seconds:
            start, end = event.start, event.end
        out.append(dataclasses.replace(event, start=round(start, 3), end=round(end, 3)))
    return sorted(out, key=lambda e: (e.start, e.label))
