"""Timelines through the door: streamed decoding, window timing end to end, subtitles, and bulk priority."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import tracemalloc
import wave
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest

from core.analyse import DecoderChunks
from core.config import Config
from core.cues import parse_srt, parse_vtt
from core.engine import Engine
from core.files import local_ref
from core.messages import Command, ReplyKind, Request
from core.timeline import TimelineParams, window_starts
from tests.support.sounds import SR, encode, noise, tone


def programme() -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Silence, a high tone, white noise, a low tone, silence: what is where, in seconds."""
    parts = [
        ("silence", np.zeros(4 * SR, np.float32)),
        ("a high tone", tone(4.0, 3000)),
        ("white noise", noise(4.0)),
        ("a low tone", tone(4.0, 200)),
        ("silence", np.zeros(int(1.3 * SR), np.float32)),
    ]
    spans, at = [], 0.0
    for label, samples in parts:
        spans.append((label, at, at + len(samples) / SR))
        at += len(samples) / SR
    return np.concatenate([p for _, p in parts]), spans


async def test_windows_follow_the_hop_and_the_last_is_flush_with_the_end(config: Config, tmp_path: Path) -> None:
    samples, _ = programme()
    duration = len(samples) / SR
    seen: list[int] = []
    async with Engine.open(config, warm_labels=False) as engine:
        embed = engine.encoder.embed_windows

        async def counting(clips: list[np.ndarray], priority: object) -> np.ndarray:
            seen.extend(len(c) for c in clips)
            return await embed(clips, priority)  # type: ignore[arg-type]

        engine.encoder.embed_windows = counting  # type: ignore[method-assign]
        progress: list[float] = []

        async def told(seconds: float) -> None:
            progress.append(seconds)

        path = encode(samples, tmp_path / "programme.flac")
        request = Request(
            "test", "s", "u1", Command.TIMELINE, "a high tone, silence", (local_ref(path),), progress=told
        )
        reply = await engine.handle(request)
    assert reply.kind is ReplyKind.TIMELINE and reply.timeline is not None, reply.text
    params = TimelineParams(config.timeline.window_seconds, config.timeline.hop_seconds)
    starts = window_starts(duration, params)
    assert len(seen) == len(starts) and set(seen) == {round(params.window_seconds * SR)}
    assert starts[-1] + params.window_seconds == pytest.approx(duration, abs=1 / SR)
    assert abs(reply.timeline.duration - duration) < 0.01
    assert progress == sorted(progress) and progress[-1] == pytest.approx(duration, abs=0.01)
    assert reply.timeline.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert parse_srt(reply.timeline.srt) == parse_vtt(reply.timeline.vtt)  # the same cues in both formats


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_two_hour_recording_streams_in_bounded_memory(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "two-hours.wav"
    with wave.open(str(path), "wb") as out:  # 8 kHz, 8 bits: 58 MB on disk, 1.4 GB once decoded to 48 kHz float
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        rng = np.random.default_rng(0)
        for _ in range(120):
            out.writeframes((128 + 40 * rng.standard_normal(8000 * 60)).clip(0, 255).astype(np.uint8).tobytes())
    coarse = dataclasses.replace(config.timeline, window_seconds=10.0, hop_seconds=10.0)
    config = dataclasses.replace(config, timeline=coarse)
    async with Engine.open(config, warm_labels=False) as engine:
        await engine.encoder.label_vectors(["white noise"])
        tracemalloc.start()
        try:
            timeline = await engine.analyser.timeline(path, ["white noise"])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert timeline.duration == pytest.approx(7200.0, abs=0.01)
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.0f} MB while analysing two hours"


async def test_an_interactive_search_overtakes_a_running_timeline(config: Config, tmp_path: Path) -> None:
    samples = np.concatenate([noise(60.0)])
    path = encode(samples, tmp_path / "long.flac")
    order: list[str] = []
    async with Engine.open(config, warm_labels=False) as engine:
        queue = engine.encoder.queue
        assert queue is not None
        model = queue.model  # type: ignore[attr-defined]
        windows, texts = model.embed_windows, model.embed_texts

        def slow_windows(clips: list[np.ndarray]) -> np.ndarray:
            order.append("windows")
            import time

            time.sleep(0.05)
            return windows(clips)

        def noted_texts(items: list[str]) -> np.ndarray:
            order.append("text")
            return texts(items)

        model.embed_windows, model.embed_texts = slow_windows, noted_texts
        await engine.encoder.label_vectors(["white noise"])
        order.clear()
        running = asyncio.create_task(
            engine.handle(Request("test", "s", "u1", Command.TIMELINE, "white noise", (local_ref(path),)))
        )
        while order.count("windows") < 2:
            await asyncio.sleep(0.01)
        search = await engine.handle(Request("test", "s", "u2", Command.SEARCH, "rain on a roof"))
        assert search.kind is ReplyKind.RESULTS
        at = order.index("text")
        reply = await running
        assert reply.kind is ReplyKind.TIMELINE
    assert order.count("windows") > at + 1  # the timeline still had windows to go when the search was served


def test_a_decoder_closed_mid_read_stops_once_the_read_returns() -> None:
    """A request cancelled while its decoder thread is reading must not fail with 'generator already executing'."""
    reading, release, closed = threading.Event(), threading.Event(), threading.Event()

    def decoder() -> Generator[np.ndarray, None, None]:
        try:
            while True:
                reading.set()
                release.wait(10)
                yield np.zeros(4, np.float32)
        finally:
            closed.set()

    chunks = DecoderChunks(decoder())
    reader = threading.Thread(target=chunks.next)
    reader.start()
    assert reading.wait(10)
    chunks.close()  # the read is still under way: closing waits for it, in the background
    assert not closed.is_set()
    release.set()
    reader.join(10)
    assert closed.wait(10)
