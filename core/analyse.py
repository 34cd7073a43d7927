"""Timelines of long recordings: stream-decode, cut windows, embed them at bulk priority, score, find events."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE, Limits, decode_stream
from core.config import TimelineConfig
from core.edges import Levels, refine_edges
from core.encoder import Encoder
from core.errors import BadAudio
from core.jobs import Priority
from core.messages import Timeline
from core.timeline import TimelineParams, calibrate, events, summary, window_starts

log = logging.getLogger(__name__)

BATCH_SECONDS = 64.0  # audio embedded per submission (32 windows of 2 s): bounds what a timeline holds at once
CHUNK_SECONDS = 30.0  # decoded audio held at once (plus one window)
# What a frame is scored against when the library has no built-in vocabulary ([search] vocabulary = "none").
REFERENCE = ("silence", "noise", "speech", "music", "a tone", "a click", "an engine", "wind", "water", "a crowd")
Progress = Callable[[float], Awaitable[None]]  # seconds analysed so far


def params_of(config: TimelineConfig) -> TimelineParams:
    """The pure stage's parameters from the config section."""
    return TimelineParams(
        window_seconds=config.window_seconds,
        hop_seconds=config.hop_seconds,
        on_threshold=config.on_threshold,
        off_threshold=config.off_threshold,
        min_event_seconds=config.min_event_seconds,
        merge_gap_seconds=config.merge_gap_seconds,
        max_labels_per_moment=config.max_labels_per_moment,
    )


class Analyser:
    """Makes timelines with the shared encoder; windows go in at bulk priority, so searches stay ahead."""

    def __init__(self, config: TimelineConfig, encoder: Encoder, memory_bytes: int, timeout: float) -> None:
        self.config = config
        self.params = params_of(config)
        self.encoder = encoder
        self.limits = Limits(config.max_bytes, config.max_seconds, timeout, memory_bytes)

    async def timeline(self, source: bytes | Path, labels: list[str], progress: Progress | None = None) -> Timeline:
        """The events heard in a recording, with a chart and subtitles."""
        from core.chart import timeline_png
        from core.cues import to_srt, to_vtt

        if not labels:
            raise ValueError("a timeline needs at least one label")
        label_vectors, logit_scale = await self.encoder.label_vectors(labels)
        # Each label must stand out above what else a frame could be (the built-in vocabulary, or a few sounds),
        # and not be clearly beaten by another label asked for (a vocabulary can't hold every alternative).
        reference, _ = await self.encoder.label_vectors(await self.encoder.vocabulary() or list(REFERENCE))
        levels = Levels(SAMPLE_RATE) if self.config.refine_edges else None
        vectors, duration = await self._window_vectors(source, progress, levels)
        scores = calibrate(vectors @ label_vectors.T, logit_scale, vectors @ reference.T, rivals=self.config.rivals)
        found = events(scores, labels, self.params, duration)
        if levels is not None:
            reach = self.params.window_seconds / 2  # CLAP hears a sound in a window it fills a quarter of
            found = refine_edges(found, levels.matrix(), reach, self.params.min_event_seconds, duration)
        png = await asyncio.to_thread(timeline_png, scores, labels, duration, self.config.chart_rows, self.params)
        log.info("timeline of %.1f s: %d windows, %d events", duration, len(vectors), len(found))
        return Timeline(duration, tuple(found), summary(found, duration), png, to_srt(found), to_vtt(found))

    async def _window_vectors(
        self, source: bytes | Path, progress: Progress | None, levels: Levels | None = None
    ) -> tuple[np.ndarray, float]:
        """Embed every window of the recording while it decodes (feeding levels, if given); (vectors, duration)."""
        window = round(self.params.window_seconds * SAMPLE_RATE)
        hop = self.params.hop_seconds
        batch = max(1, int(BATCH_SECONDS / self.params.window_seconds))
        chunks = DecoderChunks(decode_stream(source, self.limits, CHUNK_SECONDS))

        def read() -> np.ndarray | None:
            chunk = chunks.next()
            if chunk is not None and levels is not None:
                levels.feed(chunk)
            return chunk

        buffer, buffer_start, received, k = np.zeros(0, np.float32), 0, 0, 0
        pending: list[np.ndarray] = []
        done: list[np.ndarray] = []

        async def flush() -> None:
            if pending:
                done.append(await self.encoder.embed_windows(list(pending), Priority.BULK))
                pending.clear()
                if progress is not None:
                    await progress(received / SAMPLE_RATE)

        try:
            while (chunk := await asyncio.to_thread(read)) is not None:
                buffer = np.concatenate([buffer, chunk])
                received += len(chunk)
                while k * hop + self.params.window_seconds <= received / SAMPLE_RATE + 1e-9 * hop:
                    start = round(k * hop * SAMPLE_RATE) - buffer_start
                    pending.append(buffer[start : start + window].copy())
                    k += 1
                    if len(pending) >= batch:
                        await flush()
                keep = max(buffer_start, min(round(k * hop * SAMPLE_RATE), received - window))
                buffer, buffer_start = buffer[keep - buffer_start :], keep
        finally:
            chunks.close()
        if received == 0:
            raise BadAudio("That file contains no audio.")
        duration = received / SAMPLE_RATE
        for start in window_starts(duration, self.params)[k:]:  # the last window, flush with the end
            at = max(0, round(start * SAMPLE_RATE) - buffer_start)
            pending.append(buffer[at : at + window].copy())
        await flush()
        return np.concatenate(done), duration


class DecoderChunks:
    """A decoder's chunks, read in a worker thread, that can be closed while a read is still running there."""

    def __init__(self, chunks: Generator[np.ndarray, None, None]) -> None:
        self._chunks = chunks
        self._reading = threading.Lock()

    def next(self) -> np.ndarray | None:
        """The next chunk, or None at the end (blocks: call it in a thread)."""
        with self._reading:
            return next(self._chunks, None)

    def close(self) -> None:
        """Stop the decoder now, or, if a read is under way (a cancelled request), as soon as it returns."""
        if self._reading.acquire(blocking=False):
            try:
                self._chunks.close()
            finally:
                self._reading.release()
            return
        threading.Thread(target=self._close_after_read, name="timeline-decoder-close", daemon=True).start()

    def _close_after_read(self) -> None:
        with self._reading:
            self._chunks.close()
