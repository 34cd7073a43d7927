"""Cluster mode's queue on a real redis-server: frontends (StreamJobs) and an in-process worker with the tiny model."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from core.audio import Limits
from core.config import Config, ConfigError, load_config
from core.encoder import Encoder
from core.errors import BadAudio, Busy
from core.jobs import JobQueue, Priority
from core.store import SqliteStore
from core.streams import Keys, StreamJobs, connect_redis
from core.worker import serve
from tests.conftest import make_config
from tests.support import redis_server as servers
from tests.support.redis_server import RedisServer, running_redis
from tests.support.sounds import chirp, encode, noise, tone

redis_server = servers.redis_server  # the session's redis-server fixture
LIMITS = Limits(20 * 1024 * 1024, 60.0, 30.0)
TEXTS = ["a dog barking", "rain on a tin roof", "a dry kick drum"]


def cluster_config(tmp_path: Path, model_dir: Path, server: RedisServer, **cluster: object) -> Config:
    """A config on the tiny model whose [cluster] points at the test server under a fresh prefix."""
    values: dict[str, object] = {
        "redis_url": server.url,
        "key_prefix": server.prefix(),
        "heartbeat_seconds": 0.2,
        "claim_idle_seconds": 1.0,
        "result_timeout_seconds": 60.0,
    }
    return make_config(tmp_path / "data", model_dir, cluster=values | cluster)


@pytest.fixture
def cconfig(tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer) -> Config:
    return cluster_config(tmp_path, tiny_model_dir, redis_server)


class RunningWorker:
    """An in-process worker task (serve(), as `shira worker` runs it) and the event that stops it."""

    def __init__(self, config: Config) -> None:
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(serve(config, self.stop, self.ready))

    async def started(self) -> RunningWorker:
        waiting = asyncio.ensure_future(self.ready.wait())
        await asyncio.wait({waiting, self.task}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()  # raises what stopped it
        assert self.ready.is_set(), "the worker never became ready"
        return self

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


async def start_worker(config: Config) -> RunningWorker:
    return await RunningWorker(config).started()


@pytest.fixture
async def frontend(cconfig: Config) -> AsyncIterator[StreamJobs]:
    jobs = await StreamJobs.connect(cconfig)
    jobs.start()
    yield jobs
    await jobs.stop()


@pytest.fixture
async def local_queue(tiny_model_dir: Path, tmp_path: Path) -> AsyncIterator[JobQueue]:
    """The embedded mode's queue on the same model, for reference vectors."""
    from core.embedder import Embedder

    config = make_config(tmp_path / "local", tiny_model_dir)
    queue = JobQueue(Embedder.load(config.model), 64, config.queue.max_batch, config.model.batch_size)
    queue.start()
    yield queue
    await queue.stop()


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and len(a) > 0
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.min() >= 0.99999, cosines


async def registered_but_idle(config: Config) -> None:
    """A worker that has announced itself but reads nothing (so frontends submit instead of answering "no worker")."""
    client = await connect_redis(config.cluster)
    await client.zadd(Keys(config.cluster.key_prefix).workers, {"idle-worker": time.time() + 3600})
    await client.aclose()


async def stream_length(config: Config, priority: Priority) -> int:
    client = await connect_redis(config.cluster)
    try:
        return int(await client.xlen(Keys(config.cluster.key_prefix).stream(priority)))
    finally:
        await client.aclose()


async def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Wait until predicate() (or the awaitable it returns) is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_texts_clips_and_encoded_audio_equal_the_in_process_queue(
    cconfig: Config, frontend: StreamJobs, local_queue: JobQueue, tmp_path: Path
) -> None:
    worker = await start_worker(cconfig)
    try:
        assert_same(await frontend.embed_texts(TEXTS), await local_queue.embed_texts(TEXTS))
        clips = [tone(1.0), noise(2.5, seed=3), chirp(0.5)]
        assert_same(await frontend.embed_clips(clips, Priority.ADD), await local_queue.embed_clips(clips, Priority.ADD))
        data = encode(np.concatenate([chirp(6.0), noise(9.0, seed=1)]), tmp_path / "long.flac").read_bytes()
        remote = await frontend.embed_encoded(data, LIMITS, Priority.INTERACTIVE)
        local = await local_queue.embed_encoded(data, LIMITS, Priority.INTERACTIVE)
        assert len(remote.spans) == 2 and remote.spans == local.spans
        assert remote.duration == pytest.approx(local.duration) and remote.duration == pytest.approx(15.0, abs=0.1)
        assert_same(remote.vectors, local.vectors)
        many = await asyncio.gather(*(frontend.embed_texts([t]) for t in TEXTS * 4))  # batched at the worker
        for text, vectors in zip(TEXTS * 4, many, strict=True):
            assert_same(vectors, await local_queue.embed_texts([text]))
    finally:
        await worker.close()
    assert frontend.problem() is None or "no live model worker" in (frontend.problem() or "")


async def test_an_encoder_in_cluster_mode_embeds_additions_like_the_embedded_one(
    cconfig: Config, tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = encode(np.concatenate([tone(4.0), noise(8.0, seed=5)]), tmp_path / "add.wav").read_bytes()
    worker = await start_worker(cconfig)
    results = []
    try:
        for config, where in ((cconfig, "cluster"), (make_config(tmp_path / "embedded", tiny_model_dir), "embedded")):
            store = await SqliteStore.open(tmp_path / f"{where}.db")
            encoder = Encoder(config, store)
            try:
                results.append(await encoder.embed_addition(data, Priority.ADD))
                results.append(await encoder.embed_text("a dog barking"))
                assert encoder.queue is not None
                assert isinstance(encoder.queue, StreamJobs) == (where == "cluster")
            finally:
                await encoder.stop()
                await store.close()
    finally:
        await worker.close()
    cluster, cluster_text, embedded, embedded_text = results
    assert cluster.spans == embedded.spans and cluster.duration == pytest.approx(embedded.duration)
    assert_same(cluster.windows, embedded.windows)
    assert_same(cluster.vector[None], embedded.vector[None])
    assert_same(cluster_text[None], embedded_text[None])


async def test_interactive_jobs_are_read_before_bulk_ones(cconfig: Config, frontend: StreamJobs) -> None:
    await registered_but_idle(cconfig)
    await until(lambda: frontend.problem() is None)
    finished: list[str] = []

    async def job(name: str, priority: Priority) -> None:
        if priority is Priority.INTERACTIVE:
            await frontend.embed_texts([name], priority)
        else:
            await frontend.embed_clips([tone(0.5, freq=200 + len(finished))], priority, wait=True)
        finished.append(name)

    bulk = [asyncio.create_task(job(f"bulk-{i}", Priority.BULK)) for i in range(6)]
    await until(lambda: _ge(cconfig, Priority.BULK, 6))
    interactive = asyncio.create_task(job("interactive", Priority.INTERACTIVE))
    await until(lambda: _ge(cconfig, Priority.INTERACTIVE, 1))
    worker = await start_worker(
        dataclasses.replace(cconfig, cluster=dataclasses.replace(cconfig.cluster, worker_max_jobs=1))
    )
    try:
        await asyncio.wait_for(asyncio.gather(interactive, *bulk), 60)
    finally:
        await worker.close()
    assert finished[0] == "interactive" and sorted(finished[1:]) == [f"bulk-{i}" for i in range(6)]


async def _ge(config: Config, priority: Priority, n: int) -> bool:
    return await stream_length(config, priority) >= n


async def test_a_full_stream_answers_busy_and_bulk_waits_for_room(
    tiny_model_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    config = cluster_config(tmp_path, tiny_model_dir, redis_server, max_stream_length=2)
    await registered_but_idle(config)
    jobs = await StreamJobs.connect(config)
    jobs.start()
    try:
        waiting = [asyncio.create_task(jobs.embed_texts([t])) for t in TEXTS[:2]]
        await until(lambda: _ge(config, Priority.INTERACTIVE, 2))
        with pytest.raises(Busy, match="busy"):
            await jobs.embed_texts(["one too many"])
        assert await stream_length(config, Priority.INTERACTIVE) == 2  # the refused job was not added
        bulk = [
            asyncio.create_task(jobs.embed_clips([tone(0.3, freq=f)], Priority.BULK, wait=True))
            for f in (300, 400, 500)
        ]
        await until(lambda: _ge(config, Priority.BULK, 2))
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in bulk) and await stream_length(config, Priority.BULK) == 2
        worker = await start_worker(config)
        try:
            texts = await asyncio.wait_for(asyncio.gather(*waiting), 60)
            clips = await asyncio.wait_for(asyncio.gather(*bulk), 60)
        finally:
            await worker.close()
        assert [len(v) for v in texts] == [1, 1] and [len(v) for v in clips] == [1, 1, 1]
        assert await stream_length(config, Priority.BULK) == 0  # answered jobs leave the stream
    finally:
        await jobs.stop()


async def test_bad_audio_travels_back_as_the_same_friendly_error(
    cconfig: Config, frontend: StreamJobs, local_queue: JobQueue
) -> None:
    worker = await start_worker(cconfig)
    try:
        with pytest.raises(BadAudio) as local:
            await local_queue.embed_encoded(b"this is not a sound at all" * 40, LIMITS, Priority.INTERACTIVE)
        with pytest.raises(BadAudio) as remote:
            await frontend.embed_encoded(b"this is not a sound at all" * 40, LIMITS, Priority.INTERACTIVE)
        assert str(remote.value) == str(local.value) and "audio" in str(remote.value)
        assert_same(await frontend.embed_texts(TEXTS[:1]), await local_queue.embed_texts(TEXTS[:1]))  # still serving
    finally:
        await worker.close()


async def test_an_unreachable_redis_is_named_with_its_password_masked(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.support.redis_server import _free_port

    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    config = make_config(tmp_path / "data", tiny_model_dir, cluster={"redis_url": url, "connect_timeout_seconds": 2.0})
    with pytest.raises(ConfigError) as caught:
        await StreamJobs.connect(config)
    message = str(caught.value)
    assert "hunter2" not in message and ":***@127.0.0.1:" in message and "redis_url" in message
    with pytest.raises(ConfigError, match=r"\*\*\*@127\.0\.0\.1"):
        await serve(config, asyncio.Event())


async def test_problem_reports_no_live_worker_then_an_unreachable_redis(tiny_model_dir: Path, tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        config = cluster_config(tmp_path, tiny_model_dir, server)
        jobs = await StreamJobs.connect(config)
        jobs.start()
        try:
            assert "no live model worker" in (jobs.problem() or "")
            with pytest.raises(Busy, match="No model worker"):
                await jobs.embed_texts(["anyone?"])
            worker = await start_worker(config)
            try:
                await until(lambda: jobs.problem() is None)
                assert len(await jobs.embed_texts(["hello"])) == 1
            finally:
                await worker.close()
            server.proc.terminate()
            server.proc.wait(10)
            await until(lambda: "unreachable" in (jobs.problem() or ""))
            assert server.url.removeprefix("redis://") in (jobs.problem() or "")
            with pytest.raises(Busy):
                await jobs.embed_texts(["still there?"])
        finally:
            await jobs.stop()


def test_cluster_keys_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "shira.toml"
    path.write_text('[cluster]\nredis_url = "http://:pw@host"\nclaim_idle_seconds = 1.0\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "[cluster] redis_url must be empty or start with redis://" in str(caught.value)
    assert "pw" not in str(caught.value)
    path.write_text("[cluster]\nclaim_idle_seconds = 1.0\nheartbeat_seconds = 1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="claim_idle_seconds must be at least 3 heartbeat_seconds"):
        load_config(path, environ={})
    config = load_config(None, environ={"SHIRA_REDIS_URL": "redis://:pw@127.0.0.1:1/2"})
    assert config.cluster.redis_url == "redis://:pw@127.0.0.1:1/2"


async def test_an_unreadable_job_is_dropped_and_the_worker_carries_on(cconfig: Config, frontend: StreamJobs) -> None:
    client = await connect_redis(cconfig.cluster)
    stream = Keys(cconfig.cluster.key_prefix).stream(Priority.INTERACTIVE)
    try:
        await client.xadd(stream, {"kind": "clips", "id": "x", "reply": frontend.reply, "deadline": "9e9"})
        await client.xadd(stream, {"kind": "video", "id": "y", "reply": frontend.reply, "deadline": "9e9"})
        worker = await start_worker(cconfig)
        try:
            await until(lambda: _empty(cconfig, Priority.INTERACTIVE))
            assert len(await frontend.embed_texts(["still serving"])) == 1
        finally:
            await worker.close()
    finally:
        await client.aclose()


async def _empty(config: Config, priority: Priority) -> bool:
    return await stream_length(config, priority) == 0
