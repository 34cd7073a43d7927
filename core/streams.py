"""Cluster mode's job queue: frontends put jobs on Redis Streams, one per priority, and `shira worker`s answer.

Keys (all under [cluster] key_prefix): `P:jobs:interactive|add|bulk` (the job streams, read by the consumer group
"workers"), `P:reply:FRONTEND` (each frontend's own answers), `P:workers` (a sorted set of worker names by their
last heartbeat) and `P:models` (each worker's model, as JSON). The wire format of jobs and answers lives here too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.audio import Limits
from core.config import ClusterConfig, Config, ConfigError, masked_url
from core.errors import BadAudio, Busy, TooCostly, TooLarge, TooLong, UserError
from core.jobs import SHUTTING_DOWN, STOP_SECONDS, Encoded, ModelInfo, Priority, QueueStats
from core.metrics import Metrics, NoMetrics

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

GROUP = "workers"
BEATS_TO_LIVE = 3  # a worker silent for this many heartbeats is gone
REPLY_MAXLEN = 10_000  # a frontend's reply stream never grows past about this many unread answers
USER_ERRORS: dict[str, type[UserError]] = {
    c.__name__: c for c in (UserError, BadAudio, TooCostly, TooLarge, TooLong, Busy)
}
BUSY = "I'm busy right now; please try again in a moment."
UNREACHABLE = "I can't reach the model workers right now; please try again in a minute."
NO_WORKERS = "No model worker is running right now; please try again in a minute."
TIMED_OUT = "The model workers didn't answer in time; please try again."
# XADD only while the stream holds fewer than ARGV[1] jobs, so the bound is checked and kept in one step.
ADD_BOUNDED = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


@dataclass(frozen=True)
class Keys:
    """The Redis key names of one cluster."""

    prefix: str

    def stream(self, priority: Priority) -> str:
        """The job stream of one priority."""
        return f"{self.prefix}:jobs:{priority.name.lower()}"

    def reply(self, frontend: str) -> str:
        """A frontend's reply stream."""
        return f"{self.prefix}:reply:{frontend}"

    @property
    def workers(self) -> str:
        """Sorted set: worker name -> time of its last heartbeat."""
        return f"{self.prefix}:workers"

    @property
    def models(self) -> str:
        """Hash: worker name -> its ModelInfo as JSON."""
        return f"{self.prefix}:models"


def process_name() -> str:
    """A name no other process of the cluster has: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def connect_redis(cluster: ClusterConfig) -> Redis:
    """A client for [cluster] redis_url that has answered a PING; ConfigError naming the URL if it can't."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import RedisError

    timeout = cluster.connect_timeout_seconds
    client = aioredis.from_url(
        cluster.redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=max(10.0, 2 * timeout),  # longer than any blocking read we make (1 s)
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2),
    )
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = str(exc) or f"no answer in {timeout:g} s"
        raise ConfigError(
            f"can't reach Redis at {masked_url(cluster.redis_url)} ([cluster] redis_url): {reason}"
        ) from None
    return client


# The wire format. Jobs: kind ("text", "clips" or "encoded"), id, reply (the stream to answer on), deadline (Unix
# time after which nobody waits for it), then texts (JSON); or clips (float32 bytes) and lengths (JSON); or data (the
# encoded file) and limits (JSON of core.audio.Limits). Answers: id, then vectors (float32 bytes) and shape, with
# duration and spans for an encoded job; or error (a friendly message) and error_kind (a UserError's class name).


@dataclass(frozen=True)
class Job:
    """One job as a worker reads it."""

    kind: str
    id: str
    reply: str
    deadline: float
    texts: list[str] = dataclasses.field(default_factory=list)
    clips: list[np.ndarray] = dataclasses.field(default_factory=list)
    data: bytes = b""
    limits: Limits | None = None


def job_fields(kind: str, job_id: str, reply: str, deadline: float, **payload: bytes | str) -> dict[str, bytes | str]:
    """A job's stream entry."""
    return {"kind": kind, "id": job_id, "reply": reply, "deadline": repr(deadline), **payload}


def clips_payload(clips: list[np.ndarray]) -> dict[str, bytes | str]:
    """Decoded clips as one float32 buffer and their lengths."""
    flat = [np.ascontiguousarray(c, np.float32) for c in clips]
    return {"clips": b"".join(c.tobytes() for c in flat), "lengths": json.dumps([len(c) for c in flat])}


def parse_job(fields: Mapping[bytes, bytes]) -> Job:
    """A stream entry as a Job; ValueError (or KeyError) if it isn't one."""
    f = {k.decode(): v for k, v in fields.items()}
    kind = f["kind"].decode()
    head = Job(kind, f["id"].decode(), f["reply"].decode(), float(f["deadline"]))
    if kind == "text":
        return dataclasses.replace(head, texts=[str(t) for t in json.loads(f["texts"])])
    if kind == "clips":
        samples = np.frombuffer(f["clips"], np.float32).copy()  # writable, as the model needs
        ends = np.cumsum([int(n) for n in json.loads(f["lengths"])])
        if len(ends) and ends[-1] != len(samples):
            raise ValueError("clip lengths don't match the samples")
        return dataclasses.replace(head, clips=np.split(samples, ends[:-1]) if len(ends) else [])
    if kind == "encoded":
        return dataclasses.replace(head, data=f["data"], limits=Limits(**json.loads(f["limits"])))
    raise ValueError(f"unknown job kind {kind!r}")


def answer_fields(job_id: str, vectors: np.ndarray, encoded: Encoded | None = None) -> dict[str, bytes | str]:
    """A successful answer's stream entry."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    fields: dict[str, bytes | str] = {"id": job_id, "vectors": vectors.tobytes(), "shape": json.dumps(vectors.shape)}
    if encoded is not None:
        fields |= {"duration": repr(encoded.duration), "spans": json.dumps(encoded.spans)}
    return fields


def error_fields(job_id: str, error: Exception) -> dict[str, bytes | str]:
    """A failed answer's stream entry: a user's error travels as itself, anything else as a short apology."""
    if isinstance(error, UserError):
        kind = type(error).__name__ if type(error).__name__ in USER_ERRORS else "UserError"
        return {"id": job_id, "error": str(error), "error_kind": kind}
    return {"id": job_id, "error": f"the model worker failed on this job ({type(error).__name__})", "error_kind": ""}


def parse_answer(fields: Mapping[bytes, bytes]) -> tuple[str, np.ndarray | Encoded | Exception]:
    """An answer's job id and its value: vectors, an Encoded, or the error to raise."""
    f = {k.decode(): v for k, v in fields.items()}
    job_id = f["id"].decode()
    if "error" in f:
        message, kind = f["error"].decode(), f.get("error_kind", b"").decode()
        return job_id, USER_ERRORS[kind](message) if kind in USER_ERRORS else RuntimeError(message)
    vectors = np.frombuffer(f["vectors"], np.float32).reshape(json.loads(f["shape"])).copy()
    if "spans" not in f:
        return job_id, vectors
    spans = tuple((float(a), float(b)) for a, b in json.loads(f["spans"]))
    return job_id, Encoded(float(f["duration"]), spans, vectors)


async def live_workers(client: Redis, keys: Keys, heartbeat: float) -> list[str]:
    """Names of the workers heard from within the last few heartbeats."""
    since = time.time() - BEATS_TO_LIVE * heartbeat
    names: list[bytes] = await client.zrangebyscore(keys.workers, since, "+inf")  # type: ignore[assignment]
    return [name.decode() for name in names]


class StreamJobs:
    """The Jobs protocol over Redis Streams: submit to the priority's stream, await the answer on our own stream."""

    def __init__(self, client: Redis, config: Config, metrics: Metrics | None = None) -> None:
        self.client = client
        self.cluster = config.cluster
        self.url = masked_url(config.cluster.redis_url)
        self.bulk_seconds = max(config.cluster.result_timeout_seconds, config.limits.bulk_request_seconds)
        self.metrics = metrics or NoMetrics()
        self.keys = Keys(config.cluster.key_prefix)
        self.name = process_name()
        self.reply = self.keys.reply(self.name)
        self._add = client.register_script(ADD_BOUNDED)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._problem: str | None = None
        self._workers = 0
        self._stopping = False
        self._last_id = b"0-0"
        self._jobs_done = 0
        self._latency: dict[str, deque[float]] = {p.name.lower(): deque(maxlen=2000) for p in Priority}

    @classmethod
    async def connect(cls, config: Config, metrics: Metrics | None = None) -> StreamJobs:
        """Reach Redis (ConfigError naming the URL if it can't) and open this frontend's reply stream."""
        jobs = cls(await connect_redis(config.cluster), config, metrics)
        hello: bytes = await jobs.client.xadd(jobs.reply, {"hello": jobs.name})  # type: ignore[assignment]
        await jobs.client.xdel(jobs.reply, hello)  # the stream stays, empty: workers answer only streams that exist
        jobs._last_id = hello
        await jobs._beat()
        return jobs

    async def model_info(self) -> ModelInfo:
        """The model the live workers run; waits up to result_timeout_seconds for one to register."""
        deadline = time.monotonic() + self.cluster.result_timeout_seconds
        told = False
        while True:
            for name in await live_workers(self.client, self.keys, self.cluster.heartbeat_seconds):
                raw = await self.client.hget(self.keys.models, name)
                if raw is not None:
                    return ModelInfo(**json.loads(raw))
            if time.monotonic() > deadline:
                await self.stop()
                raise ConfigError(f"no model worker has registered at Redis {self.url}: start `shira worker`")
            if not told:
                log.info("waiting for a model worker to register at %s", self.url)
                told = True
            await asyncio.sleep(min(0.5, self.cluster.heartbeat_seconds))

    def start(self) -> None:
        """Start reading answers and watching the workers."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_answers()), loop.create_task(self._watch())]

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Take no more jobs; wait up to timeout for the answers of those sent, then answer the rest "shutting
        down" and remove the reply stream."""
        deadline = time.monotonic() + timeout
        self._stopping = True  # the loops check it too: redis-py may turn a cancelled read into a connection error
        while self._tasks and self._waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Busy(SHUTTING_DOWN))
        from redis.exceptions import RedisError

        try:
            await self.client.delete(self.reply)
        except (RedisError, OSError):
            log.warning("could not remove reply stream %s at %s", self.reply, self.url)
        await self.client.aclose()

    def problem(self) -> str | None:
        """Why jobs can't be served: Redis unreachable, or no live worker."""
        return self._problem

    def hold(self) -> AbstractContextManager[None]:
        """Nothing to hold: the workers' bulk batches run on their own machines."""
        return nullcontext()

    @property
    def depth(self) -> int:
        """This frontend's jobs waiting for an answer."""
        return len(self._waiting)

    async def embed_texts(self, texts: list[str], priority: Priority = Priority.INTERACTIVE) -> np.ndarray:
        """Embed texts at a worker; Busy when the stream is full."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        result = await self._submit("text", {"texts": json.dumps(list(texts))}, priority, wait=False)
        assert isinstance(result, np.ndarray)
        return result

    async def embed_clips(self, clips: list[np.ndarray], priority: Priority, wait: bool = False) -> np.ndarray:
        """Embed decoded windows at a worker; with wait, wait for room instead of Busy."""
        if not clips:
            return np.zeros((0, 0), np.float32)
        result = await self._submit("clips", clips_payload(clips), priority, wait)
        assert isinstance(result, np.ndarray)
        return result

    async def embed_encoded(self, data: bytes, limits: Limits, priority: Priority, wait: bool = False) -> Encoded:
        """Send the encoded sound; a worker decodes it under these limits and embeds its windows."""
        payload: dict[str, bytes | str] = {"data": data, "limits": json.dumps(dataclasses.asdict(limits))}
        result = await self._submit("encoded", payload, priority, wait)
        assert isinstance(result, Encoded)
        return result

    async def _submit(self, kind: str, payload: dict[str, bytes | str], priority: Priority, wait: bool) -> Any:
        from redis.exceptions import RedisError

        if self._stopping:
            raise Busy(SHUTTING_DOWN)
        if not wait and self._workers == 0:
            await self._beat()  # look again: one may have just started
            if self._workers == 0:
                raise Busy(NO_WORKERS if self._problem and "unreachable" not in self._problem else UNREACHABLE)
        job_id = uuid.uuid4().hex
        started = time.monotonic()
        seconds = self.bulk_seconds if wait else self.cluster.result_timeout_seconds
        fields = job_fields(kind, job_id, self.reply, time.time() + seconds, **payload)
        args = [self.cluster.max_stream_length, *(part for pair in fields.items() for part in pair)]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = future
        try:
            while True:
                try:
                    added = await self._add(keys=[self.keys.stream(priority)], args=args)
                except (RedisError, OSError) as exc:
                    log.warning("submitting a job to Redis at %s failed: %s", self.url, exc)
                    raise Busy(UNREACHABLE) from None
                if added is not None:
                    break
                if not wait or time.monotonic() - started > seconds:
                    raise Busy(BUSY)
                await asyncio.sleep(0.05)
            try:
                result = await asyncio.wait_for(future, seconds - (time.monotonic() - started))
            except TimeoutError:
                raise Busy(TIMED_OUT) from None
        finally:
            self._waiting.pop(job_id, None)
        self._jobs_done += 1
        elapsed = time.monotonic() - started
        self._latency[priority.name.lower()].append(elapsed)
        self.metrics.job(priority.name.lower(), 0.0, elapsed)
        if isinstance(result, Exception):
            raise result
        return result

    async def _read_answers(self) -> None:
        """Hand each answer on our reply stream to its waiting job, then delete it from the stream."""
        from redis.exceptions import RedisError

        while not (self._stopping and not self._waiting):
            try:
                read: Any = await self.client.xread({self.reply: self._last_id}, count=256, block=1000)
            except (RedisError, OSError) as exc:
                log.warning("reading answers from Redis at %s failed: %s", self.url, exc)
                await asyncio.sleep(1.0)
                continue
            ids = []
            for _, entries in read:
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    self._last_id = entry_id
                    self._deliver(fields)
            if ids:
                try:
                    await self.client.xdel(self.reply, *ids)
                except (RedisError, OSError) as exc:
                    log.warning("deleting read answers at %s failed: %s", self.url, exc)

    def _deliver(self, fields: Mapping[bytes, bytes]) -> None:
        try:
            job_id, value = parse_answer(fields)
        except (KeyError, ValueError, TypeError):
            log.exception("an unreadable answer on %s", self.reply)
            return
        future = self._waiting.get(job_id)
        if future is None or future.done():
            log.debug("answer to job %s that nobody waits for (given up, or answered twice)", job_id)
            return
        future.set_result(value)

    async def _watch(self) -> None:
        """Each heartbeat: is Redis there, is any worker alive; keep the reply stream from expiring."""
        while not self._stopping:
            await self._beat()
            await asyncio.sleep(self.cluster.heartbeat_seconds)

    async def _beat(self) -> None:
        from redis.exceptions import RedisError

        try:
            workers = len(await live_workers(self.client, self.keys, self.cluster.heartbeat_seconds))
            await self.client.expire(self.reply, max(60, int(10 * self.cluster.heartbeat_seconds)))
        except (RedisError, OSError) as exc:
            self._workers, self._problem = 0, f"Redis at {self.url} is unreachable: {exc}"
            return
        self._workers = workers
        self._problem = None if workers else f"no live model worker at Redis {self.url}"

    def stats(self) -> QueueStats:
        """This frontend's jobs in flight and latency percentiles per priority (batches are the workers')."""

        def pct(values: deque[float], q: float) -> float:
            return float(np.percentile(np.array(values), q) * 1000) if values else 0.0

        return QueueStats(
            depth=len(self._waiting),
            jobs_done=self._jobs_done,
            batches=0,
            mean_batch=0.0,
            max_batch=0,
            latency_p50_ms={k: pct(v, 50) for k, v in self._latency.items()},
            latency_p95_ms={k: pct(v, 95) for k, v in self._latency.items()},
        )
