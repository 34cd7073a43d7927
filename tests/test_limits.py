"""Size, duration, queue length, per-space quota and per-user rate: config keys, enforced before expensive work.

"Before" is shown with a recording engine (the real one, noting each decode and each embedding it starts) and
AudioRefs that note each download: a request over a limit must be answered without the work the limit guards.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.audio import SAMPLE_RATE, Audio, Limits
from core.config import Config, load_config
from core.encoder import Embedded
from core.engine import Engine
from core.jobs import Priority
from core.messages import AudioRef, Command, Reply, ReplyKind, Request
from tests.support.sounds import encode, tone

ROOT = Path(__file__).resolve().parents[1]
LIMITS_TOML = """
[audio]
max_add_bytes = 200000
max_query_bytes = 100000
max_add_seconds = 5.0
max_query_seconds = 3.0

[queue]
max_pending = 2

[limits]
requests_per_minute = 6
space_quota = 2
"""


class RecordingEngine(Engine):
    """The real engine, noting every decode (of a query, or an addition's first) and every embedding it starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decodes: list[int] = []
        self.embeds: list[float] = []
        decode, measure, embed_audio = self.encoder.decode, self.encoder.measure, self.encoder.embed_audio

        async def recorded_decode(data: bytes, limits: Limits, rate: int = SAMPLE_RATE) -> Audio:
            self.decodes.append(len(data))
            return await decode(data, limits, rate)

        async def recorded_measure(data: bytes, limits: Limits) -> Audio | int:
            self.decodes.append(len(data))
            return await measure(data, limits)

        async def recorded_embed(audio: Audio, priority: Priority, wait: bool = False) -> Embedded:
            self.embeds.append(audio.duration)
            return await embed_audio(audio, priority, wait)

        self.encoder.decode = recorded_decode  # type: ignore[method-assign]
        self.encoder.measure = recorded_measure  # type: ignore[method-assign]
        self.encoder.embed_audio = recorded_embed  # type: ignore[method-assign]


class Downloads:
    """AudioRefs whose downloads are counted."""

    def __init__(self) -> None:
        self.count = 0

    def ref(
        self, data: bytes, name: str = "sound.wav", size: int | None = -1, duration: float | None = None
    ) -> AudioRef:
        async def fetch() -> bytes:
            self.count += 1
            return data

        return AudioRef(name, fetch, size=len(data) if size == -1 else size, duration=duration)


def limited_config(tmp_path: Path, model_dir: Path, extra: str = "") -> Config:
    """The limits above, read from a TOML file the way `shira --config` reads it."""
    path = tmp_path / "limits.toml"
    model = f'[model]\nid = {json.dumps(str(model_dir))}\nprecision = "fp32"\n[search]\nvocabulary = "none"\n'
    path.write_text(model + LIMITS_TOML + extra, encoding="utf-8")
    return load_config(path, environ={"SHIRA_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
async def engine(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[RecordingEngine]:
    async with RecordingEngine.open(limited_config(tmp_path, tiny_model_dir), warm_labels=False) as opened:
        yield opened  # type: ignore[misc]


def add(ref: AudioRef, user: str = "u1", space: str = "s") -> Request:
    return Request("test", space, user, Command.ADD, audio=(ref,))


def short_sound(tmp_path: Path, seconds: float = 0.5, freq: float = 440.0) -> bytes:
    return encode(tone(seconds, freq), tmp_path / f"tone-{seconds}-{freq}.ogg").read_bytes()


def assert_refused(reply: Reply, *words: str, kind: ReplyKind = ReplyKind.ERROR) -> None:
    assert reply.kind == kind and reply.error_id is None, reply.text
    for word in words:
        assert word in reply.text, reply.text


def test_every_limit_is_a_documented_config_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = limited_config(tmp_path, tiny_model_dir)
    assert (config.audio.max_add_bytes, config.audio.max_add_seconds) == (200000, 5.0)
    assert (config.audio.max_query_bytes, config.audio.max_query_seconds) == (100000, 3.0)
    assert config.queue.max_pending == 2
    assert (config.limits.requests_per_minute, config.limits.space_quota) == (6, 2)
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    for key in (
        "max_add_bytes",
        "max_query_bytes",
        "max_add_seconds",
        "max_query_seconds",
        "max_pending",
        "requests_per_minute",
        "space_quota",
    ):
        assert f"\n{key} = " in example, f"{key} is not documented in config.example.toml"


async def test_declared_size_is_refused_before_download(engine: RecordingEngine) -> None:
    downloads = Downloads()
    big = downloads.ref(b"\0" * 16, size=200001)
    assert_refused(await engine.handle(add(big)), "MB", "limit")
    query = Request("test", "s", "u1", Command.SIMILAR, audio=(downloads.ref(b"\0" * 16, size=100001),))
    assert_refused(await engine.handle(query), "MB", "limit")
    assert downloads.count == 0 and engine.decodes == [] and engine.embeds == []


async def test_real_size_is_refused_before_decoding(engine: RecordingEngine) -> None:
    downloads = Downloads()
    for size in (None, 10):  # unknown, and a platform that under-declared
        assert_refused(await engine.handle(add(downloads.ref(b"\0" * 200001, size=size))), "MB", "limit")
    assert downloads.count == 2 and engine.decodes == [] and engine.embeds == []


async def test_declared_duration_is_refused_before_download(engine: RecordingEngine, tmp_path: Path) -> None:
    downloads = Downloads()
    voice = downloads.ref(short_sound(tmp_path), duration=5.5)
    assert_refused(await engine.handle(add(voice)), "5 s", "limit")
    query = Request("test", "s", "u1", Command.IDENTIFY, audio=(downloads.ref(short_sound(tmp_path), duration=3.5),))
    assert_refused(await engine.handle(query), "3 s", "limit")
    assert downloads.count == 0 and engine.decodes == [] and engine.embeds == []


async def test_long_audio_is_refused_before_model_work(engine: RecordingEngine, tmp_path: Path) -> None:
    long = short_sound(tmp_path, seconds=8.0)  # small as a file, too long as a sound
    assert len(long) < 200000
    jobs_before = engine.encoder.queue.stats().jobs_done
    assert_refused(await engine.handle(add(Downloads().ref(long))), "longer than", "5 s")
    assert len(engine.decodes) == 1 and engine.embeds == []
    assert engine.encoder.queue.stats().jobs_done == jobs_before
    assert await engine.store.count("s") == 0


async def test_full_library_is_refused_before_download(engine: RecordingEngine, tmp_path: Path) -> None:
    downloads = Downloads()
    for freq in (300.0, 500.0):
        reply = await engine.handle(add(downloads.ref(short_sound(tmp_path, freq=freq))))
        assert reply.kind == ReplyKind.ADDED, reply.text
    decodes = len(engine.decodes)
    assert_refused(await engine.handle(add(downloads.ref(short_sound(tmp_path, freq=700.0)))), "full", "2")
    assert downloads.count == 2 and len(engine.decodes) == decodes
    other = await engine.handle(add(downloads.ref(short_sound(tmp_path, freq=700.0)), space="another"))
    assert other.kind == ReplyKind.ADDED, "the quota is per space"


async def test_rate_limit_is_per_user_and_refuses_before_download(engine: RecordingEngine, tmp_path: Path) -> None:
    downloads = Downloads()
    data = short_sound(tmp_path)
    # The budget is 6 units: looking things up costs a tenth, model work (a search) a whole unit.
    answers = [await engine.handle(Request("test", "s", "fast", Command.STATS)) for _ in range(20)]
    answers += [await engine.handle(Request("test", "s", "fast", Command.SEARCH, f"rain {n}")) for n in range(4)]
    assert [a.kind for a in answers] == [ReplyKind.STATS] * 20 + [ReplyKind.RESULTS] * 4
    decodes = len(engine.decodes)
    refused = await engine.handle(add(downloads.ref(data), user="fast"))
    assert_refused(refused, "too quickly", "try again in", "second", kind=ReplyKind.BUSY)
    assert downloads.count == 0 and len(engine.decodes) == decodes
    help_reply = await engine.handle(Request("test", "s", "fast", Command.HELP))
    assert help_reply.kind == ReplyKind.HELP  # help stays available
    assert (await engine.handle(add(downloads.ref(data), user="patient"))).kind == ReplyKind.ADDED


class GatedModel:
    """Wraps the real model so that every batch waits for a gate: jobs pile up in the queue meanwhile."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.gate = threading.Event()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(60)
        return self.model.embed_texts(texts)

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        self.gate.wait(60)
        return self.model.embed_windows(clips)


async def test_full_queue_answers_busy_before_download_or_decoding(engine: RecordingEngine, tmp_path: Path) -> None:
    queue = engine.encoder.queue
    gated = GatedModel(queue.model)  # type: ignore[attr-defined]
    queue.model = gated  # type: ignore[attr-defined]
    searches = [
        asyncio.create_task(engine.handle(Request("test", "s", f"u{i}", Command.SEARCH, text=f"word{i}")))
        for i in range(2)
    ]
    for _ in range(500):
        if queue.depth >= 2:
            break
        await asyncio.sleep(0.01)
    assert queue.depth == 2
    downloads = Downloads()
    busy = [
        await engine.handle(add(downloads.ref(short_sound(tmp_path)), user="late")),
        await engine.handle(Request("test", "s", "late", Command.SIMILAR, audio=(downloads.ref(b"x" * 100),))),
        await engine.handle(Request("test", "s", "late", Command.SEARCH, text="another")),
    ]
    for reply in busy:
        assert_refused(reply, "busy", kind=ReplyKind.BUSY)
    assert downloads.count == 0 and engine.decodes == [] and engine.embeds == []
    gated.gate.set()
    assert [r.kind for r in await asyncio.gather(*searches)] == [ReplyKind.RESULTS] * 2
    assert queue.depth == 0
