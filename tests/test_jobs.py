"""The job queue: priorities, micro-batching, bounds, shutdown, stats."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from core.errors import Busy
from core.jobs import JobQueue, Priority


class RecordingModel:
    """A fake model: each vector encodes its input; records every batch; can be held at a gate."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[object]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(5)
        self.batches.append(("text", list(texts)))
        return np.array([[float(len(t)), 0.0] for t in texts], np.float32)

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        self.gate.wait(5)
        self.batches.append(("audio", [float(c[0]) for c in clips]))
        return np.array([[float(c[0]), 1.0] for c in clips], np.float32)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
async def setup():
    model = RecordingModel()
    queue = JobQueue(model, max_pending=8, text_batch=4, audio_batch=2)
    queue.start()
    yield model, queue
    model.gate.set()
    await queue.stop()


async def test_results_go_back_to_the_right_caller(setup) -> None:
    model, queue = setup
    results = await asyncio.gather(*(queue.embed_texts(["x" * n]) for n in range(1, 6)))
    assert [r[0, 0] for r in results] == [1, 2, 3, 4, 5]
    audio = await queue.embed_clips([np.full(4, v, np.float32) for v in (7, 8, 9)], Priority.ADD)
    assert audio[:, 0].tolist() == [7, 8, 9]


async def test_interactive_goes_ahead_of_additions_and_bulk(setup) -> None:
    model, queue = setup
    model.gate.clear()
    blocker = asyncio.create_task(queue.embed_clips([np.full(1, 0, np.float32)], Priority.BULK))
    await wait_until(lambda: queue.depth == 1)
    bulk = asyncio.create_task(queue.embed_clips([np.full(1, 1, np.float32)], Priority.BULK))
    add = asyncio.create_task(queue.embed_clips([np.full(1, 2, np.float32)], Priority.ADD))
    text = asyncio.create_task(queue.embed_texts(["hello"]))
    await wait_until(lambda: queue.depth == 4)
    model.gate.set()
    await asyncio.gather(blocker, bulk, add, text)
    kinds = [(kind, items) for kind, items in model.batches]
    assert kinds[0] == ("audio", [0.0])  # was already running
    assert kinds[1] == ("text", ["hello"])
    assert kinds[2] == ("audio", [2.0])
    assert kinds[3] == ("audio", [1.0])


async def test_same_kind_requests_are_micro_batched(setup) -> None:
    model, queue = setup
    model.gate.clear()
    first = asyncio.create_task(queue.embed_texts(["a"]))
    await wait_until(lambda: queue.depth == 1)
    rest = [asyncio.create_task(queue.embed_texts([f"t{i}"])) for i in range(6)]
    await wait_until(lambda: queue.depth == 7)
    model.gate.set()
    await asyncio.gather(first, *rest)
    sizes = [len(items) for _, items in model.batches]
    assert sizes[0] in (1, 4) and max(sizes) == 4 and sum(sizes) == 7
    stats = queue.stats()
    assert stats.max_batch == 4 and stats.jobs_done == 7 and stats.latency_p95_ms["interactive"] > 0


async def test_long_bulk_job_yields_to_interactive_between_batches(setup) -> None:
    model, queue = setup
    model.gate.clear()
    bulk = asyncio.create_task(queue.embed_clips([np.full(1, v, np.float32) for v in range(6)], Priority.BULK))
    await wait_until(lambda: queue.depth == 1)
    text = asyncio.create_task(queue.embed_texts(["now"]))
    await wait_until(lambda: queue.depth == 2)
    model.gate.set()
    result = await bulk
    await text
    assert result[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    order = [kind for kind, _ in model.batches]
    assert order.index("text") == 1  # right after the bulk job's first batch, not after all three


async def test_full_queue_answers_busy_and_bulk_waits(setup) -> None:
    model, queue = setup
    model.gate.clear()
    waiting = [asyncio.create_task(queue.embed_texts([str(i)])) for i in range(8)]
    await wait_until(lambda: queue.depth == 8)
    with pytest.raises(Busy):
        await queue.embed_texts(["one too many"])
    bulk = asyncio.create_task(queue.embed_clips([np.zeros(1, np.float32)], Priority.BULK, wait=True))
    await asyncio.sleep(0.1)
    assert not bulk.done()
    model.gate.set()
    await asyncio.gather(*waiting, bulk)
    assert queue.depth == 0


async def test_model_errors_reach_the_caller_and_the_worker_survives(setup) -> None:
    model, queue = setup

    def boom(texts: list[str]) -> np.ndarray:
        raise ValueError("model exploded")

    model.embed_texts = boom  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="exploded"):
        await queue.embed_texts(["x"])
    assert (await queue.embed_clips([np.ones(1, np.float32)], Priority.ADD))[0, 0] == 1


async def test_stop_drains_then_refuses() -> None:
    model = RecordingModel()
    queue = JobQueue(model, max_pending=8, text_batch=1, audio_batch=1)
    queue.start()
    model.gate.clear()
    jobs = [asyncio.create_task(queue.embed_texts([str(i)])) for i in range(3)]
    await wait_until(lambda: queue.depth == 3)
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0.05)
    model.gate.set()
    await stopping
    assert [float(j.result()[0, 0]) for j in jobs] == [1.0, 1.0, 1.0]
    with pytest.raises(Busy, match="shutting down"):
        await queue.embed_texts(["late"])
