"""Faults and deadlines: a fault fails only its own jobs and the worker carries on; stop() doesn't wait forever;
every request has a deadline with a friendly answer; nothing is left holding memory afterwards."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.engine import Engine
from core.errors import Busy
from core.jobs import JobQueue, Priority
from core.messages import AudioRef, Command, ReplyKind, Request
from tests.conftest import make_config
from tests.support.sounds import encode, tone


class FaultyModel:
    """A fake model: vector = input length; a text starting with "boom" raises, "none" returns no vectors at all,
    "short" returns one vector too few (a fault outside the model call); "stall" waits for the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if any(t.startswith("stall") for t in texts):
            self.gate.wait(30)
        if any(t.startswith("boom") for t in texts):
            raise ValueError("model exploded")
        if any(t.startswith("exit") for t in texts):
            raise SystemExit(3)
        if any(t.startswith("none") for t in texts):
            return None  # type: ignore[return-value]
        vectors = np.array([[float(len(t)), 0.0] for t in texts], np.float32)
        return vectors[:-1] if any(t.startswith("short") for t in texts) else vectors

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        return np.array([[float(len(c)), 1.0] for c in clips], np.float32)


@pytest.fixture
async def queue() -> Any:
    queue = JobQueue(FaultyModel(), max_pending=16, text_batch=4, audio_batch=4)
    queue.start()
    yield queue
    queue.model.gate.set()  # type: ignore[attr-defined]
    await queue.stop(timeout=5)


@pytest.mark.parametrize("poison", ["boom", "none", "short", "exit"])
async def test_a_fault_fails_its_batch_only_and_the_worker_carries_on(queue: JobQueue, poison: str) -> None:
    results = await asyncio.gather(queue.embed_texts([poison]), queue.embed_texts(["fine"]), return_exceptions=True)
    assert isinstance(results[0], Exception) and not isinstance(results[0], SystemExit)
    assert all(isinstance(r, Exception) or r[0, 0] == 4 for r in results[1:])  # batched with it, or answered
    assert (await queue.embed_texts(["after"]))[0, 0] == 5
    assert (await queue.embed_clips([np.ones(3, np.float32)], Priority.ADD))[0, 0] == 3
    assert queue.problem() is None and queue.depth == 0


async def test_a_fault_in_the_queue_itself_fails_one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = JobQueue(FaultyModel(), max_pending=16, text_batch=4, audio_batch=4)
    real, failed = queue._take_batch, []

    def flaky(urgent_only: bool = False) -> Any:
        if queue._heap and not failed:  # the worker's own code, not the model, fails once
            failed.append(True)
            raise KeyError("bookkeeping bug")
        return real(urgent_only)

    monkeypatch.setattr(queue, "_take_batch", flaky)
    victim = asyncio.create_task(queue.embed_texts(["victim"]))
    await asyncio.sleep(0.01)  # queued before the worker starts, so the fault meets it
    queue.start()
    try:
        with pytest.raises(KeyError):
            await asyncio.wait_for(victim, 5)
        assert (await asyncio.wait_for(queue.embed_texts(["next"]), 5))[0, 0] == 4
    finally:
        await queue.stop(timeout=5)


async def test_a_dead_worker_is_started_again(queue: JobQueue) -> None:
    thread = queue._thread
    assert thread is not None
    with queue._cond:  # make the thread end as if it had died
        queue._stopping = True
        queue._cond.notify_all()
    await asyncio.to_thread(thread.join, 5)
    queue._stopping = False
    assert queue.problem() == "the model worker is not running"
    assert (await asyncio.wait_for(queue.embed_texts(["revived"]), 5))[0, 0] == 7
    assert queue._thread is not thread and queue.problem() is None


async def test_stop_gives_up_on_a_stuck_model_and_answers_what_is_left() -> None:
    model = FaultyModel()
    queue = JobQueue(model, max_pending=16, text_batch=1, audio_batch=1, stuck_seconds=0.2)
    queue.start()
    stuck = asyncio.create_task(queue.embed_texts(["stall"]))
    waiting = asyncio.create_task(queue.embed_texts(["behind"]))
    await asyncio.sleep(0.4)
    assert queue.problem() is not None and "one batch" in queue.problem()  # type: ignore[operator]
    started = time.perf_counter()
    await queue.stop(timeout=0.3)
    assert time.perf_counter() - started < 2
    for job in (stuck, waiting):
        with pytest.raises(Busy, match="shutting down"):
            await asyncio.wait_for(job, 1)
    model.gate.set()  # the stuck batch ends later, quietly: its jobs were answered already


class GatedModel:
    """The real model, with a gate on text and audio batches and a switch that makes audio batches fail."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.gate = threading.Event()
        self.gate.set()
        self.fail_audio = False

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(30)
        return self.model.embed_texts(texts)

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        self.gate.wait(30)
        if self.fail_audio:
            raise RuntimeError("injected model fault")
        return self.model.embed_windows(clips)


def upload(data: bytes, name: str) -> AudioRef:
    async def fetch() -> bytes:
        return data

    return AudioRef(name, fetch, size=len(data))


@pytest.fixture
async def engine(tmp_path: Path, tiny_model_dir: Path) -> Any:
    config = make_config(
        tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"}, limits={"request_seconds": 1.0}
    )
    async with Engine.open(config, warm_labels=False) as opened:
        queue = opened.encoder.queue
        queue.model = GatedModel(queue.model)  # type: ignore[attr-defined]
        yield opened


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_an_injected_model_fault_gets_an_error_id_and_the_next_request_succeeds(
    engine: Engine, tmp_path: Path
) -> None:
    model: GatedModel = engine.encoder.queue.model  # type: ignore[attr-defined, union-attr]
    sound = encode(tone(1.0, 440.0), tmp_path / "a.ogg").read_bytes()
    model.fail_audio = True
    reply = await engine.handle(Request("test", "s", "u", Command.ADD, audio=(upload(sound, "a.ogg"),)))
    assert reply.kind == ReplyKind.ERROR and reply.error_id and reply.error_id in reply.text, reply.text
    model.fail_audio = False
    reply = await engine.handle(Request("test", "s", "u", Command.ADD, audio=(upload(sound, "a.ogg"),)))
    assert reply.kind == ReplyKind.ADDED, reply.text
    assert engine.budget.used == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_request_past_its_deadline_gets_a_friendly_answer(engine: Engine, tmp_path: Path) -> None:
    model: GatedModel = engine.encoder.queue.model  # type: ignore[attr-defined, union-attr]
    sound = encode(tone(1.0, 660.0), tmp_path / "b.ogg").read_bytes()
    model.gate.clear()
    started = time.perf_counter()
    answers = await asyncio.gather(
        engine.handle(Request("test", "s", "u", Command.SEARCH, text="thunder")),
        engine.handle(Request("test", "s", "u", Command.SIMILAR, audio=(upload(sound, "b.ogg"),))),
        engine.handle(Request("test", "s", "u", Command.ADD, audio=(upload(sound, "b.ogg"),))),
    )
    assert time.perf_counter() - started < 5
    for reply in answers:
        assert reply.kind == ReplyKind.ERROR and reply.text == "That took too long; please try again.", reply.text
        assert reply.error_id is None
    assert engine.budget.used == 0
    model.gate.set()
    reply = await engine.handle(Request("test", "s", "u2", Command.SEARCH, text="thunder"))
    assert reply.kind == ReplyKind.RESULTS, reply.text
    assert await engine.store.count("s") == 0  # the abandoned addition never got as far as the library


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_timeline_has_its_own_deadline(tmp_path: Path, tiny_model_dir: Path) -> None:
    limits = {"request_seconds": 60.0, "bulk_request_seconds": 60.0}
    config = make_config(tmp_path / "data", tiny_model_dir, limits=limits, timeline={"deadline_seconds": 1.0})
    sound = encode(tone(3.0, 440.0), tmp_path / "c.ogg").read_bytes()
    async with Engine.open(config, warm_labels=False) as engine:
        model = GatedModel(engine.encoder.queue.model)  # type: ignore[attr-defined]
        engine.encoder.queue.model = model  # type: ignore[attr-defined]
        model.gate.clear()
        started = time.perf_counter()
        request = Request("test", "s", "u", Command.TIMELINE, text="a tone", audio=(upload(sound, "c.ogg"),))
        reply = await engine.handle(request)
        assert reply.kind == ReplyKind.ERROR and reply.text == "That took too long; please try again.", reply.text
        assert time.perf_counter() - started < 30  # the timeline's 1 s, not the 60 s of other requests
        model.gate.set()
