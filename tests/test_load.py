"""1000 concurrent requests through the core with the tiny model: only explicit busy answers, bounded memory,
a drained queue, and per-user rate limits that hold."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import random
from collections import Counter
from pathlib import Path

import pytest

from core.engine import Engine
from core.messages import AudioRef, Command, Reply, ReplyKind, Request
from core.ratelimit import TENTHS, cost
from tests.conftest import make_config
from tests.library_checks import engine_problems, store_problems
from tests.support.sounds import encode, tone

USERS = 50
PER_USER = 20  # 1000 requests a burst
PER_MINUTE = 10
QUEUE = 32
TOO_QUICK = "too quickly"
MB = 1024 * 1024


def rss(settle: bool = False) -> int:
    """Resident memory of this process, in bytes; with settle, after returning freed heap pages to the OS.

    Without settling, glibc keeps freed arenas resident, so earlier tests in the same process add noise that
    says nothing about whether this burst leaked.
    """
    if settle:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * 4096


def ref(data: bytes, name: str) -> AudioRef:
    async def fetch() -> bytes:
        return data

    return AudioRef(name, fetch, size=len(data))


def burst(tag: str, ids: list[int], sounds: list[bytes], rng: random.Random) -> list[Request]:
    """USERS x PER_USER mixed requests in a random order; users are named per burst, so limits start fresh."""
    requests = []
    for u in range(USERS):
        user = f"{tag}-user{u}"
        for n in range(PER_USER):
            pick = rng.random()
            base = {"platform": "test", "space": "load", "user": user}
            if pick < 0.6:
                request = Request(command=Command.SEARCH, text=f"{tag} sound {u} {n}", **base)  # type: ignore[arg-type]
            elif pick < 0.7:
                request = Request(command=Command.PLAY, text=str(rng.choice(ids)), **base)  # type: ignore[arg-type]
            elif pick < 0.8:
                request = Request(command=Command.MORE, text=str(rng.choice(ids)), **base)  # type: ignore[arg-type]
            elif pick < 0.85:
                request = Request(command=Command.STATS, **base)  # type: ignore[arg-type]
            elif pick < 0.92:
                audio = (ref(rng.choice(sounds), "query.ogg"),)
                request = Request(command=Command.SIMILAR, audio=audio, **base)  # type: ignore[arg-type]
            else:
                audio = (ref(rng.choice(sounds), f"{tag}-{u}-{n}.ogg"),)
                request = Request(command=Command.ADD, audio=audio, **base)  # type: ignore[arg-type]
            requests.append(request)
    rng.shuffle(requests)
    return requests


async def run_burst(engine: Engine, requests: list[Request]) -> tuple[list[Reply], int]:
    """Send every request at once; returns the replies and the peak RSS seen meanwhile."""
    peak = rss()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        replies = await asyncio.wait_for(asyncio.gather(*(engine.handle(r) for r in requests)), timeout=240)
    finally:
        done.set()
        await sampler
    return replies, peak


def expected_admissions(requests: list[Request]) -> Counter[str]:
    """How many requests of each user fit the per-user budget, taken in order, each costing its weight."""
    spent: Counter[str] = Counter()
    admitted: Counter[str] = Counter()
    for request in requests:
        weight = cost(request)
        if spent[request.user] + weight <= PER_MINUTE * TENTHS:
            spent[request.user] += weight
            admitted[request.user] += 1
    return admitted


def check_burst(requests: list[Request], replies: list[Reply]) -> Counter[str]:
    """No errors but busy answers; each user got exactly as many answers as their budget pays for."""
    kinds: Counter[str] = Counter()
    admitted: Counter[str] = Counter()
    for request, reply in zip(requests, replies, strict=True):
        assert reply.kind != ReplyKind.ERROR, f"{request.command}: {reply.text}"
        if reply.kind == ReplyKind.BUSY:
            kinds["rate limited" if TOO_QUICK in reply.text else "queue busy"] += 1
            if TOO_QUICK in reply.text:
                continue
        else:
            expected = {
                Command.SEARCH: ReplyKind.RESULTS,
                Command.MORE: ReplyKind.RESULTS,
                Command.SIMILAR: ReplyKind.RESULTS,
                Command.PLAY: ReplyKind.AUDIO,
                Command.STATS: ReplyKind.STATS,
                Command.ADD: ReplyKind.ADDED,
            }[request.command]
            assert reply.kind == expected, f"{request.command}: {reply.kind} {reply.text}"
            kinds[str(reply.kind)] += 1
        admitted[request.user] += 1
    expected = expected_admissions(requests)
    assert admitted == expected, "the per-user rate limit let through a different number"
    assert kinds["rate limited"] == len(requests) - sum(expected.values())
    return kinds


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_thousand_concurrent_requests(tmp_path: Path, tiny_model_dir: Path) -> None:
    rng = random.Random(1000)
    config = make_config(
        tmp_path / "data",
        tiny_model_dir,
        search={"vocabulary": "none"},
        queue={"max_pending": QUEUE},
        limits={"requests_per_minute": PER_MINUTE, "library_requests_per_minute": 0},  # all users share one
    )
    sounds = [encode(tone(0.4, 200 + 50 * i), tmp_path / f"t{i}.ogg").read_bytes() for i in range(8)]
    async with Engine.open(config, warm_labels=False) as engine:
        seeded = [await engine.ingest.add("load", s, f"seed{i}.ogg", uploader="seed") for i, s in enumerate(sounds[:4])]
        ids = [added.sample_id for added in seeded]
        first = burst("a", ids, sounds, rng)
        replies, _ = await run_burst(engine, first)
        all_replies = list(replies)
        kinds = check_burst(first, replies)
        assert kinds["queue busy"] > 0, f"the burst never filled the queue, so it proves little: {kinds}"
        assert kinds["results"] > 0, kinds
        assert engine.encoder.depth == 0
        resident = rss()  # what the process holds, allocator slack included: the base for the burst's peak
        settled = rss(settle=True)  # the same with freed heap returned: the base for lasting growth

        second = burst("b", ids, sounds, rng)  # the same again: memory must not keep growing
        replies, peak = await run_burst(engine, second)
        all_replies += replies
        check_burst(second, replies)
        assert engine.encoder.depth == 0 and engine.encoder.queue.stats().depth == 0
        assert peak - resident < 150 * MB, f"a burst raised RSS by {(peak - resident) / MB:.0f} MB"
        grown = rss(settle=True) - settled
        assert grown < 60 * MB, f"RSS grew by {grown / MB:.0f} MB after a second burst"
        assert len(engine.commands._queries) <= 512 and len(engine.encoder._text_cache) <= 2048
        assert await engine_problems(engine) == []
        stored = {r.added.sample_id for r in all_replies if r.kind == ReplyKind.ADDED and r.added is not None}
        assert await engine.store.count("load") == len(stored | set(ids))  # every addition once, nothing else
    assert store_problems(tmp_path / "data") == []
