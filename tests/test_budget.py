"""The memory budget: admission by bytes in flight, busy for chat and waiting for bulk; long additions streamed
window by window with the same windows and vectors as whole ones."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.audio import decode
from core.budget import Budget
from core.embedder import windows
from core.encoder import WHOLE_SECONDS, _cut
from core.engine import Engine
from core.errors import Busy
from core.jobs import Priority
from core.messages import AudioRef, Command, ReplyKind, Request
from tests.conftest import make_config
from tests.support.sounds import chirp, encode, tone

MB = 1024 * 1024


async def test_try_lease_refuses_when_full_and_release_makes_room() -> None:
    budget = Budget(100)
    first = budget.try_lease(60)
    with pytest.raises(Busy, match="try again in a moment"):
        budget.try_lease(50)
    second = budget.try_lease(40)
    assert budget.used == 100
    first.release()
    first.release()  # idempotent
    assert budget.used == 40
    budget.try_lease(60).release()
    second.release()
    assert budget.used == 0 and budget.peak == 100


async def test_a_request_larger_than_the_budget_runs_alone() -> None:
    budget = Budget(100)
    big = budget.try_lease(500)
    with pytest.raises(Busy):
        budget.try_lease(1)
    big.release()
    assert budget.try_lease(1).size == 1


async def test_bulk_waits_in_order_and_a_shrinking_lease_admits_it() -> None:
    budget = Budget(100)
    held = budget.try_lease(90)
    order: list[str] = []

    async def bulk(name: str, size: int) -> None:
        lease = await budget.lease(size)
        order.append(name)
        await asyncio.sleep(0.01)
        lease.release()

    waiting = [asyncio.create_task(bulk("a", 50)), asyncio.create_task(bulk("b", 20))]
    await asyncio.sleep(0.02)
    assert order == [] and budget.used == 90  # b would fit beside a, but waits its turn behind a
    held.resize(40)  # what was estimated turned out smaller
    await asyncio.gather(*waiting)
    assert order == ["a", "b"]
    held.release()
    assert budget.used == 0


async def test_a_waiter_that_gives_up_leaks_nothing() -> None:
    budget = Budget(100)
    held = budget.try_lease(100)
    waiter = asyncio.create_task(budget.lease(80))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert budget.used == 0 and budget.try_lease(100).size == 100


async def test_a_waiter_cancelled_as_it_is_admitted_hands_the_room_on() -> None:
    budget = Budget(100)
    held = budget.try_lease(100)
    first = asyncio.create_task(budget.lease(100))
    second = asyncio.create_task(budget.lease(100))
    await asyncio.sleep(0.01)
    held.release()  # admits first; its task hasn't run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    lease = await asyncio.wait_for(second, 1)
    assert budget.used == 100
    lease.release()
    assert budget.used == 0


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    size=st.integers(1, 60),
    hop=st.integers(1, 60),
    chunks=st.lists(st.integers(1, 70), min_size=1, max_size=40),
)
def test_cutting_a_stream_gives_the_windows_of_the_whole(n: int, size: int, hop: int, chunks: list[int]) -> None:
    hop = min(hop, size)
    samples = np.arange(n, dtype=np.float32)
    spans = windows(n, size / 48_000, hop / 48_000)
    bounds = np.cumsum([0, *chunks])
    pieces = [samples[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if a < n]
    if bounds[-1] < n:
        pieces.append(samples[bounds[-1] :])
    cut = list(_cut(iter(pieces), spans))
    assert len(cut) == len(spans)
    for span, window in zip(spans, cut, strict=True):
        assert np.array_equal(window, samples[span.start : span.end])
        assert window.base is None  # a copy: it doesn't pin the chunk it came from


def test_a_stream_that_ends_early_is_an_error_not_fewer_windows() -> None:
    spans = windows(100, 40 / 48_000, 40 / 48_000)
    with pytest.raises(RuntimeError, match="early"):
        list(_cut(iter([np.zeros(70, np.float32)]), spans))


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("hop", [10.0, 7.0])
async def test_a_long_addition_streamed_matches_the_whole(tmp_path: Path, tiny_model_dir: Path, hop: float) -> None:
    config = make_config(tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"})
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, hop_seconds=hop))
    seconds = WHOLE_SECONDS + 35.5
    data = encode(np.concatenate([chirp(seconds / 2), tone(seconds / 2, 330.0)]), tmp_path / "long.flac").read_bytes()
    async with Engine.open(config, warm_labels=False) as engine:
        encoder = engine.encoder
        whole = await encoder.embed_audio(decode(data, encoder.add_limits), Priority.ADD)
        jobs = encoder.queue.stats().jobs_done
        streamed = await encoder.embed_addition(data, Priority.ADD)
        groups = encoder.queue.stats().jobs_done - jobs
    assert streamed.duration == pytest.approx(seconds, abs=0.01) and streamed.duration == whole.duration
    assert streamed.spans == whole.spans and len(streamed.spans) > 8
    assert np.allclose(streamed.windows, whole.windows, atol=1e-5)
    assert float(streamed.vector @ whole.vector) > 0.99999
    assert groups == -(-len(streamed.spans) // config.model.batch_size)  # one job per group of windows


def ref(data: bytes, fetched: list[str], name: str, size: int | None = None) -> AudioRef:
    async def fetch() -> bytes:
        fetched.append(name)
        return data

    return AudioRef(name, fetch, size=len(data) if size is None else size)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_full_budget_answers_chat_busy_before_download_and_bulk_waits(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(
        tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"}, limits={"max_bytes_in_flight": 64 * MB}
    )
    data = encode(tone(1.0, 500.0), tmp_path / "t.ogg").read_bytes()
    fetched: list[str] = []
    async with Engine.open(config, warm_labels=False) as engine:
        held = engine.budget.try_lease(60 * MB)  # a 10 MB file needs at least 20 MB: it doesn't fit
        add = Request("test", "s", "u", Command.ADD, audio=(ref(data, fetched, "a.ogg", size=10 * MB),))
        similar = Request("test", "s", "u", Command.SIMILAR, audio=(ref(data, fetched, "q.ogg", size=10 * MB),))
        for request in (add, similar):
            reply = await engine.handle(request)
            assert reply.kind == ReplyKind.BUSY and "try again in a moment" in reply.text, reply.text
        assert fetched == []
        bulk = asyncio.create_task(engine.handle(dataclasses.replace(add, bulk=True)))
        await asyncio.sleep(0.2)
        assert not bulk.done() and fetched == []  # waiting for room, not refused
        held.release()
        reply = await asyncio.wait_for(bulk, 60)
        assert reply.kind == ReplyKind.ADDED, reply.text
        assert fetched == ["a.ogg"] and engine.budget.used == 0
