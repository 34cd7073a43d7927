"""Sound-event timeline: from per-window label scores to labelled events with times, and a short summary."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimelineParams:
    """How a clip is cut into frames and how frame scores become events."""

    # 2 s windows hold a whole bark, word or knock, which CLAP (trained on 1-10 s clips) recognises; shorter
    # windows are looped many times by the extractor's repeatpad and sound like a drone. A 0.5 s hop gives each
    # event's edges to within half a second at 4 windows per 2 s (each costs a full 10 s CLAP pass: see report).
    window_seconds: float = 2.0
    hop_seconds: float = 0.5
    # Hysteresis on calibrated per-label probabilities: an event starts at >= on and lasts while >= off.
    on_threshold: float = 0.75
    off_threshold: float = 0.5
    median_frames: int = 3  # odd; 3 frames remove one-frame (0.5 s) blips but keep anything a window really heard
    min_event_seconds: float = 1.0  # a sound heard by one window alone spans 4 frames (2 s); 1 s drops flickers
    merge_gap_seconds: float = 1.0  # one run, not two, across gaps shorter than this
    max_labels_per_moment: int = 2  # e.g. speech over music; more is clutter in a chat reply

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise ValueError("window_seconds and hop_seconds must be positive")
        if not 0 <= self.off_threshold <= self.on_threshold <= 1:
            raise ValueError("thresholds must satisfy 0 <= off_threshold <= on_threshold <= 1")
        if self.median_frames < 1 or self.median_frames % 2 == 0:
            raise ValueError("median_frames must be a positive odd number")
        if self.max_labels_per_moment < 1:
            raise ValueError("max_labels_per_moment must be at least 1")


@dataclass(frozen=True)
class Event:
    """One label heard from start to end (seconds), with its mean calibrated score."""

    label: str
    start: float
    end: float
    score: float


def window_starts(duration: float, params: TimelineParams) -> np.ndarray:
    """Frame start times in seconds: every hop, the last window flush with the end; one window if shorter."""
    window, hop = params.window_seconds, params.hop_seconds
    if duration <= window:
        return np.zeros(1)
    count = int(np.floor((duration - window) / hop + 1e-9)) + 1
    starts = np.arange(count) * hop
    if starts[-1] + window < duration - 1e-6:
        starts = np.append(starts, duration - window)
    return starts


def frame_cells(frames: int, params: TimelineParams, duration: float | None = None) -> np.ndarray:
    """Each frame's (begin, end) in seconds: cells split at midpoints between window centres, covering [0, duration].

    With a regular hop a frame's cell is the hop-long span centred on its window's centre; the first cell reaches
    back to 0 and the last forward to the end. Without a duration the frames are taken as all hop apart.
    """
    if duration is None:
        duration = (frames - 1) * params.hop_seconds + params.window_seconds if frames else 0.0
        starts = np.arange(frames) * params.hop_seconds
    else:
        starts = window_starts(duration, params)
        if len(starts) != frames:
            raise ValueError(f"{frames} frames, but a {duration:.3f} s clip has {len(starts)} windows")
    centres = starts + min(params.window_seconds, duration) / 2
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def calibrate(
    similarities: np.ndarray,
    logit_scale: float,
    reference: np.ndarray | None = None,
    quantile: float = 0.75,
    rivals: bool = False,
) -> np.ndarray:
    """Per-label probabilities in [0, 1] from cosine similarities (frames x labels), each label on its own.

    A softmax over the labels would make a score depend on which other labels were asked for (one label alone
    would always be 1; two sounds at once would split it). Instead each label gets sigmoid(scale * (similarity -
    baseline)) under CLAP's own logit scale, where a frame's baseline is the `quantile` of its similarities to a
    reference vocabulary (frames x K): a label must stand out above most of the sounds that frame could have been.
    The reference defaults to the labels themselves, which suits many labels but lets only about a quarter of them
    score high at once; for co-occurring sounds or for one or two labels pass another one, such as the similarities
    to shira's built-in vocabulary, or to a single background prompt (K = 1, any quantile).

    Not each label's median over the frames: a label's similarity on sounds it doesn't name varies with what they
    are (a "white noise" prompt sits closer to silence than to tones), so on a clip of several sounds it lit up on
    whatever happened to sit above its median.

    With rivals, the labels asked for also compete: a label scores at most 2 * sigmoid(scale * (similarity - the
    best other label's)), which is 1 at a tie or above, so sounds heard together keep their scores, but a label
    clearly beaten by another (a "high tone" on a low tone, which a reference without pitches lets through) loses.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2:
        raise ValueError("similarities must be a (frames, labels) matrix")
    if reference is None:
        if sims.shape[1] < 3:
            raise ValueError("with fewer than 3 labels, pass a reference vocabulary's similarities")
        reference = sims
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref[:, None]
    if len(ref) != len(sims) or ref.shape[1] == 0:
        raise ValueError("the reference needs similarities for every frame")
    baseline = np.quantile(ref, quantile, axis=1, keepdims=True) if len(ref) else np.zeros((0, 1))
    probs = _sigmoid(logit_scale * (sims - baseline))
    if rivals and sims.shape[1] > 1:
        others = np.where(np.eye(sims.shape[1], dtype=bool), -np.inf, sims[:, None, :]).max(axis=2)
        probs = np.minimum(probs, np.minimum(1.0, 2 * _sigmoid(logit_scale * (sims - others))))
    return probs


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def median_filter(scores: np.ndarray, frames: int) -> np.ndarray:
    """Running median over frames (axis 0) of odd length, the edges padded with their nearest value."""
    if frames <= 1 or len(scores) == 0:
        return np.asarray(scores, dtype=np.float64)
    half = frames // 2
    padded = np.pad(np.asarray(scores, dtype=np.float64), ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, frames, axis=0)
    return np.median(windows, axis=-1)


def hysteresis(scores: np.ndarray, on: float, off: float) -> np.ndarray:
    """Active frames per label: switched on at >= on, kept on while >= off."""
    active = np.zeros(scores.shape, dtype=bool)
    state = np.zeros(scores.shape[1], dtype=bool)
    for i, row in enumerate(scores):
        state = np.where(state, row >= off, row >= on)
        active[i] = state
    return active


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame indices of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def events(
    scores: np.ndarray, labels: Sequence[str], params: TimelineParams, duration: float | None = None
) -> list[Event]:
    """Events from calibrated scores (frames x labels), sorted by start then label.

    Per label: median filter, hysteresis; then per frame only the top max_labels_per_moment active labels; runs of
    active frames closer than merge_gap are joined, and events shorter than min_event_seconds dropped. An event
    spans from the start of its first active frame's cell to the end of its last (see frame_cells).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise ValueError("scores must be a (frames, labels) matrix with one column per label")
    if len(scores) == 0:
        return []
    cells = frame_cells(len(scores), params, duration)
    smooth = median_filter(scores, params.median_frames)
    active = hysteresis(smooth, params.on_threshold, params.off_threshold)
    ranked = np.where(active, smooth, -np.inf)
    keep = np.argsort(-ranked, axis=1, kind="stable")[:, : params.max_labels_per_moment]
    crowded = np.zeros_like(active)
    np.put_along_axis(crowded, keep, True, axis=1)
    active &= crowded
    found = []
    for column, label in enumerate(labels):
        spans: list[list[int]] = []
        for first, last in _runs(active[:, column]):
            if spans and cells[first, 0] - cells[spans[-1][1], 1] < params.merge_gap_seconds:
                spans[-1][1] = last
            else:
                spans.append([first, last])
        for first, last in spans:
            start, end = float(cells[first, 0]), float(cells[last, 1])
            if end - start >= params.min_event_seconds:
                found.append(Event(label, start, end, float(smooth[first : last + 1, column].mean())))
    return sorted(found, key=lambda e: (e.start, e.label))


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary(found: Sequence[Event], duration: float, mostly: float = 0.5, max_times: int = 3) -> str:
    """A one-line summary: labels heard over `mostly` of the clip, then the others with their times."""
    if not found:
        return "nothing recognised"
    by_label: dict[str, list[Event]] = {}
    for event in sorted(found, key=lambda e: (e.start, e.label)):
        by_label.setdefault(event.label, []).append(event)
    covered = {label: _covered(spans) for label, spans in by_label.items()}
    dominant = [label for label in by_label if duration > 0 and covered[label] >= mostly * duration]
    parts = []
    if dominant:
        parts.append("mostly " + " and ".join(dominant))
    for label, spans in by_label.items():
        if label in dominant:
            continue
        times = [f"{clock(e.start)}–{clock(np.ceil(e.end))}" for e in spans[:max_times]]
        more = f" (+{len(spans) - max_times} more)" if len(spans) > max_times else ""
        parts.append(f"{label} at {_and(times)}{more}")
    return "; ".join(parts)


def _covered(spans: Sequence[Event]) -> float:
    """Seconds covered by the union of these (start-sorted) events."""
    total, reach = 0.0, -np.inf
    for e in spans:
        start = max(e.start, reach)
        if e.end > start:
            total += e.end - start
        reach = max(reach, e.end)
    return total


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
