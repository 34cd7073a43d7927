"""`shira worker`: one model serving the cluster's job streams, batched by an in-process JobQueue.

Each job is read with XREADGROUP (interactive first, then add, then bulk), run through the queue, answered on its
frontend's reply stream, and only then XACKed and deleted. A held job's idle time is reset every heartbeat, so
XAUTOCLAIM by another worker takes only the jobs of a worker that stopped (killed, frozen, cut off) for
claim_idle_seconds. Crash tests can SIGKILL a worker (SHIRA_CRASH_AT, core/crashpoints.py) at worker-embedded (a
job's vectors computed, not yet answered) or worker-answered (answered, not yet acknowledged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import crashpoints
from core.budget import Budget, decoded_bytes
from core.config import Config, ConfigError, masked_url
from core.errors import UserError
from core.jobs import Encoded, JobQueue, ModelInfo, Priority
from core.speedups import on_own_thread
from core.streams import (
    GROUP,
    REPLY_MAXLEN,
    Job,
    Keys,
    answer_fields,
    connect_redis,
    error_fields,
    parse_job,
    process_name,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from core.jobs import Model

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # a blocking read waits this long, so stopping is noticed within a second


class Worker:
    """Serves the job streams with one queue in front of one model until stop is set."""

    def __init__(self, client: Redis, config: Config, queue: JobQueue, info: ModelInfo) -> None:
        self.client = client
        self.cluster = config.cluster
        self.queue = queue
        self.info = info
        self.keys = Keys(config.cluster.key_prefix)
        self.name = process_name()
        self.streams = [self.keys.stream(p) for p in Priority]  # in the order they are read
        self.budget = Budget(config.limits.max_bytes_in_flight)  # decoded audio of encoded jobs held at once
        self.answered = 0
        self._held: dict[tuple[str, bytes], asyncio.Task[None]] = {}  # (stream, entry id) -> its task
        self._room = asyncio.Event()
        self._room.set()
        self._leaving = False

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Register, serve until stop is set, then finish held jobs for up to worker_drain_seconds."""
        for stream in self.streams:
            await self._create_group(stream)
        await self._beat()
        if ready is not None:
            ready.set()
        log.info("worker %s serving %s at %s", self.name, self.keys.prefix, masked_url(self.cluster.redis_url))
        beat = asyncio.create_task(self._beat_loop())
        try:
            await self._serve(stop)
            if self._held:
                log.info("worker %s finishing %d held jobs", self.name, len(self._held))
                _, late = await asyncio.wait(self._held.values(), timeout=self.cluster.worker_drain_seconds or None)
                for task in late:  # left pending: another worker takes them over
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            self._leaving = True
            beat.cancel()
            await asyncio.wait({beat}, timeout=5.0)
            await self._leave()
        log.info("worker %s stopped after %d answers", self.name, self.answered)

    async def _create_group(self, stream: str) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _serve(self, stop: asyncio.Event) -> None:
        from redis.exceptions import RedisError

        next_claim = 0.0
        while not stop.is_set():
            if len(self._held) >= self.cluster.worker_max_jobs:
                self._room.clear()
                waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._room.wait())}
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
                continue
            try:
                if time.monotonic() >= next_claim:
                    await self._reclaim()
                    next_claim = time.monotonic() + max(
                        self.cluster.heartbeat_seconds, self.cluster.claim_idle_seconds / 4
                    )
                await self._read()
            except (RedisError, OSError) as exc:
                log.warning("worker %s can't reach Redis at %s: %s", self.name, masked_url(self.cluster.redis_url), exc)
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        """Take new jobs, interactive first; block on all streams for a while when none is waiting."""
        taken = 0
        for stream in self.streams:
            free = self.cluster.worker_max_jobs - len(self._held)
            if free <= 0:
                return
            read: Any = await self.client.xreadgroup(GROUP, self.name, {stream: ">"}, count=free)
            taken += self._take(read)
        if taken == 0:
            free = self.cluster.worker_max_jobs - len(self._held)
            ask: Any = dict.fromkeys(self.streams, ">")
            self._take(await self.client.xreadgroup(GROUP, self.name, ask, count=free, block=BLOCK_MS))

    async def _reclaim(self) -> None:
        """Take over jobs that another worker has held without a sign of life for claim_idle_seconds."""
        idle_ms = int(self.cluster.claim_idle_seconds * 1000)
        for stream in self.streams:
            free = self.cluster.worker_max_jobs - len(self._held)
            if free <= 0:
                return
            # Redis 7 answers [next id, entries, deleted ids]; 6.2 has no third part: only the entries are used.
            claimed = await self.client.xautoclaim(stream, GROUP, self.name, idle_ms, "0-0", count=free)
            entries = [(entry_id, fields) for entry_id, fields in claimed[1] if entry_id is not None]
            if entries:
                log.warning("worker %s took over %d jobs from %s", self.name, len(entries), stream)
                self._take([(stream, entries)])

    def _take(self, read: Any) -> int:
        """Start a task for each entry read (as XREADGROUP or XAUTOCLAIM give them); how many were new."""
        count = 0
        for stream_name, entries in read or []:
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            for entry_id, fields in entries:
                key = (stream, entry_id)
                if key in self._held or fields is None:
                    continue
                task = asyncio.create_task(self._handle(stream, entry_id, fields))
                self._held[key] = task
                task.add_done_callback(functools.partial(self._release, key))
                count += 1
        return count

    def _release(self, key: tuple[str, bytes], _: object) -> None:
        self._held.pop(key, None)
        self._room.set()

    async def _handle(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """Run one job and answer it; acknowledge only once the answer is published."""
        from redis.exceptions import RedisError

        priority = Priority(self.streams.index(stream))
        try:
            job = parse_job(fields)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            log.error("worker %s dropped an unreadable entry %s on %s", self.name, entry_id, stream)
            await self._ack(stream, entry_id)
            return
        if time.time() > job.deadline:
            log.info("job %s expired before a worker reached it; dropped", job.id)
            await self._ack(stream, entry_id)
            return
        answer: Any
        try:
            answer = answer_fields(job.id, *await self._run(job, priority))
            crashpoints.reached("worker-embedded")
        except UserError as exc:
            answer = error_fields(job.id, exc)
        except Exception as exc:
            log.exception("worker %s failed on job %s", self.name, job.id)
            answer = error_fields(job.id, exc)
        try:
            await self.client.xadd(job.reply, answer, maxlen=REPLY_MAXLEN, approximate=True, nomkstream=True)
            crashpoints.reached("worker-answered")
            await self._ack(stream, entry_id)
        except (RedisError, OSError) as exc:  # left pending: answered again here or by another worker later
            log.warning("worker %s could not answer job %s: %s", self.name, job.id, exc)
            return
        self.answered += 1

    async def _run(self, job: Job, priority: Priority) -> tuple[np.ndarray, Encoded | None]:
        """The job's vectors (and, for an encoded sound, its spans) from the queue."""
        if job.kind == "text":
            return await self.queue.embed_texts(job.texts, priority), None
        if job.kind == "clips":
            return await self.queue.embed_clips(job.clips, priority, wait=True), None
        assert job.limits is not None
        async with self.budget.hold(decoded_bytes(job.limits.max_seconds), wait=True):  # decoded whole, held
            encoded = await self.queue.embed_encoded(job.data, job.limits, priority, wait=True)
        return encoded.vectors, encoded

    async def _ack(self, stream: str, entry_id: bytes) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _beat_loop(self) -> None:
        from redis.exceptions import RedisError

        while not self._leaving:  # checked as well as cancelled: redis-py may turn a cancel into a connection error
            await asyncio.sleep(self.cluster.heartbeat_seconds)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("worker %s heartbeat failed: %s", self.name, exc)

    async def _beat(self) -> None:
        """Say this worker is alive, with its model; reset the idle time of the jobs it holds."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.workers, {self.name: time.time()})
            pipe.hset(self.keys.models, self.name, json.dumps(dataclasses.asdict(self.info)))
            for stream in self.streams:
                ids: Any = [entry_id for (s, entry_id) in self._held if s == stream]
                if ids:
                    pipe.xclaim(stream, GROUP, self.name, 0, ids, justid=True)
            await pipe.execute()

    async def _leave(self) -> None:
        from redis.exceptions import RedisError

        try:
            await self.client.zrem(self.keys.workers, self.name)
            await self.client.hdel(self.keys.models, self.name)
            for stream in self.streams:  # a consumer that still holds jobs stays, so they can be taken over
                if not await self.client.xpending_range(stream, GROUP, "-", "+", 1, consumername=self.name):
                    await self.client.xgroup_delconsumer(stream, GROUP, self.name)
        except (RedisError, OSError) as exc:
            log.warning("worker %s could not deregister: %s", self.name, exc)


def local_queue(model: Model, config: Config) -> JobQueue:
    """The in-process queue a worker batches its jobs with."""
    return JobQueue(
        model,
        max_pending=config.cluster.worker_max_jobs,
        text_batch=config.queue.max_batch,
        audio_batch=config.model.batch_size,
        stuck_seconds=config.limits.request_seconds,
        window_seconds=config.model.window_seconds,
        hop_seconds=config.model.hop_seconds,
    )


async def serve(config: Config, stop: asyncio.Event, ready: asyncio.Event | None = None) -> Worker:
    """Load the model, reach Redis and serve the job streams until stop is set (set ready once serving)."""
    from core.embedder import Embedder

    if not config.cluster.redis_url:
        raise ConfigError("`shira worker` needs [cluster] redis_url (or SHIRA_REDIS_URL)")
    client = await connect_redis(config.cluster)
    try:
        embedder = await on_own_thread(Embedder.load, config.model, Path(config.data_dir) / "cache")
        queue = local_queue(embedder, config)
        queue.start()
        worker = Worker(client, config, queue, ModelInfo(embedder.fingerprint, embedder.dim, embedder.logit_scale))
        try:
            await worker.run(stop, ready)
        finally:
            await queue.stop()
        return worker
    finally:
        await client.aclose()
