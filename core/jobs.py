"""The job queue: one worker thread owns the model; interactive work goes first."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from core.audio import Limits, decode
from core.errors import Busy
from core.metrics import Metrics, NoMetrics

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # stop() waits this long for queued work, then answers what is left "shutting down"
SHUTTING_DOWN = "I'm shutting down; please try again in a minute."
HOLD_SECONDS = 0.25  # longest overlapping held requests keep a running bulk batch waiting (see JobQueue.hold)


class Priority(IntEnum):
    """Lower runs first."""

    INTERACTIVE = 0
    ADD = 1
    BULK = 2


class Model(Protocol):
    """What the worker needs from an embedder."""

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...
    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray: ...


class Jobs(Protocol):
    """What the engine needs from a job queue; JobQueue is the in-process default."""

    @property
    def depth(self) -> int: ...
    def start(self) -> None: ...
    async def stop(self, timeout: float = STOP_SECONDS) -> None: ...
    def problem(self) -> str | None: ...
    def hold(self) -> AbstractContextManager[None]: ...
    async def embed_texts(self, texts: list[str], priority: Priority = Priority.INTERACTIVE) -> np.ndarray: ...
    async def embed_clips(self, clips: list[np.ndarray], priority: Priority, wait: bool = False) -> np.ndarray: ...
    async def embed_encoded(self, data: bytes, limits: Limits, priority: Priority, wait: bool = False) -> Encoded: ...
    def stats(self) -> QueueStats: ...


@dataclass(frozen=True)
class Encoded:
    """An encoded sound decoded and embedded: its length, its windows' spans in seconds and their vectors."""

    duration: float
    spans: tuple[tuple[float, float], ...]
    vectors: np.ndarray


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the core needs to know of the model behind a queue."""

    fingerprint: str
    dim: int
    logit_scale: float


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of the queue's health."""

    depth: int
    jobs_done: int
    batches: int
    mean_batch: float
    max_batch: int
    latency_p50_ms: dict[str, float]
    latency_p95_ms: dict[str, float]


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    kind: str = field(compare=False)  # "text" or "audio"
    items: list[Any] = field(compare=False)
    future: asyncio.Future[np.ndarray] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    enqueued: float = field(compare=False)
    started: float | None = field(default=None, compare=False)  # when the model first took it up
    done: int = field(default=0, compare=False)  # items already embedded
    results: list[np.ndarray] = field(default_factory=list, compare=False)


class JobQueue:
    """Bounded priority queue with micro-batching in front of one model-owning thread.

    A fault in a batch, in the model or in the worker's own code, fails that batch's jobs and nothing else; the
    worker carries on, and a worker thread found dead is started again.
    """

    def __init__(
        self,
        model: Model,
        max_pending: int,
        text_batch: int,
        audio_batch: int,
        metrics: Metrics | None = None,
        stuck_seconds: float = 120.0,
        window_seconds: float = 10.0,
        hop_seconds: float = 10.0,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self.model = model
        self.hold_seconds = hold_seconds
        self.window_seconds = window_seconds  # how embed_encoded cuts a sound into model windows
        self.hop_seconds = hop_seconds
        self.metrics = metrics or NoMetrics()
        self.stuck_seconds = stuck_seconds  # one batch running longer than this is reported by problem()
        self.max_pending = max_pending
        self.text_batch = max(1, text_batch)
        self.audio_batch = max(1, audio_batch)
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._jobs_done = 0
        self._batches = 0
        self._batch_items = 0
        self._max_batch = 0
        self._latency: dict[str, deque[float]] = {p.name.lower(): deque(maxlen=2000) for p in Priority}
        self._running: Priority | None = None  # priority of the batch the model is running (worker thread only)
        self._batch_started: float | None = None  # when the running outermost batch began
        self._holds = 0  # interactive requests being answered (see hold)
        self._held_since = 0.0  # when the current run of overlapping holds began

    def start(self) -> None:
        """Start the worker thread (and let a model with pause points hand them to the queue)."""
        if hasattr(self.model, "checkpoint"):
            self.model.checkpoint = self._run_urgent
        if hasattr(self.model, "meanwhile"):
            self.model.meanwhile = self._run_texts
        self._thread = threading.Thread(target=self._run, name="shira-model", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Finish what is queued, for up to timeout seconds; then stop the worker and answer what is left Busy."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout)
            if thread.is_alive():
                log.warning("the model worker was still busy after %.0f s; not waiting for it", timeout)
        with self._cond:
            left, self._heap = self._heap, []
        for job in left:
            self._resolve(job, None, Busy(SHUTTING_DOWN))

    def problem(self) -> str | None:
        """Why the worker can't serve (stopped, or stuck on one batch), or None."""
        if self._thread is None or not self._thread.is_alive():
            return None if self._stopping else "the model worker is not running"
        started = self._batch_started
        if started is not None and (busy := time.perf_counter() - started) > self.stuck_seconds:
            return f"the model has been on one batch for {busy:.0f} s"
        return None

    @contextmanager
    def hold(self) -> Iterator[None]:
        """While a chat request is answered, a running bulk batch waits at its next pause point, so the request's
        own decoding, lookups and search don't share the cores with it. Overlapping holds count as one, and bulk
        work goes on once they have lasted hold_seconds, so a stream of requests can't stop it."""
        with self._cond:
            if self._holds == 0:
                self._held_since = time.perf_counter()
            self._holds += 1
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                self._cond.notify_all()

    def _revive(self) -> None:
        """Start a new worker if the thread died (it shouldn't: the worker catches everything)."""
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            log.error("the model worker thread had stopped; starting a new one")
            self.start()

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._heap)

    async def embed_texts(self, texts: list[str], priority: Priority = Priority.INTERACTIVE) -> np.ndarray:
        """Embed texts; raises Busy when the queue is full."""
        return await self._submit("text", list(texts), priority, wait=False)

    async def embed_clips(self, clips: list[np.ndarray], priority: Priority, wait: bool = False) -> np.ndarray:
        """Embed audio windows; with wait=True, wait for room instead of raising Busy (bulk imports)."""
        return await self._submit("audio", list(clips), priority, wait=wait)

    async def embed_encoded(self, data: bytes, limits: Limits, priority: Priority, wait: bool = False) -> Encoded:
        """Decode a sound whole in a thread (the hardened ffmpeg path), cut it into windows and embed them."""
        from core.embedder import windows

        audio = await asyncio.to_thread(decode, data, limits)
        spans = windows(len(audio.samples), self.window_seconds, self.hop_seconds)
        clips = [audio.samples[w.start : w.end] for w in spans]
        vectors = await self.embed_clips(clips, priority, wait=wait)
        return Encoded(audio.duration, tuple(w.seconds for w in spans), vectors)

    async def _submit(self, kind: str, items: list[Any], priority: Priority, wait: bool) -> np.ndarray:
        if not items:
            return np.zeros((0, 0), np.float32)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._revive()
        while True:
            with self._cond:
                if self._stopping:
                    raise Busy(SHUTTING_DOWN)
                if len(self._heap) < self.max_pending:
                    job = _Job(int(priority), next(self._seq), kind, items, future, loop, time.perf_counter())
                    heapq.heappush(self._heap, job)
                    self._cond.notify()
                    break
            if not wait:
                raise Busy("I'm busy right now; please try again in a moment.")
            await asyncio.sleep(0.02)
        return await future

    def _take_batch(self, urgent_only: bool = False) -> tuple[str, list[tuple[_Job, int, int]]] | None:
        """Pop the best job and compatible followers: same kind and priority, up to one batch of items.

        With urgent_only (inside a running batch), return at once: an interactive batch, or None.
        """
        with self._cond:
            while True:
                if urgent_only:  # jobs of the running batch are in the heap: leave them be
                    if not self._urgent_waiting():
                        return None
                    break
                abandoned = [job for job in self._heap if job.future.cancelled()]
                for job in abandoned:  # the caller gave up; don't spend the model on it
                    self._heap.remove(job)
                heapq.heapify(self._heap)
                if self._heap:
                    break
                if self._stopping:
                    return None
                self._cond.wait()
            return self._batch_from(self._heap[0])

    def _urgent_waiting(self) -> bool:
        """Whether the best queued job is interactive (lock held)."""
        return bool(self._heap) and self._heap[0].priority == Priority.INTERACTIVE

    def _take_texts(self) -> tuple[str, list[tuple[_Job, int, int]]] | None:
        """The best text batch of any priority, or None (see _run_texts)."""
        with self._cond:
            texts = [job for job in self._heap if job.kind == "text" and not job.future.cancelled()]
            return self._batch_from(min(texts)) if texts else None

    def _batch_from(self, first: _Job) -> tuple[str, list[tuple[_Job, int, int]]]:
        """first and compatible followers: same kind and priority, up to one batch of items (lock held)."""
        limit = self.text_batch if first.kind == "text" else self.audio_batch
        parts: list[tuple[_Job, int, int]] = []
        taken = 0
        now = time.perf_counter()
        for job in sorted(self._heap):
            if job < first or job.kind != first.kind or job.priority != first.priority or taken >= limit:
                if parts:
                    break
                continue
            n = min(len(job.items) - job.done, limit - taken)
            parts.append((job, job.done, job.done + n))
            taken += n
            if job.started is None:
                job.started = now
        return first.kind, parts

    def _run(self) -> None:
        while True:
            try:
                batch = self._take_batch()
            except BaseException as exc:  # a fault of the queue itself: fail the job it was looking at, carry on
                log.exception("the model worker failed to pick a batch")
                self._fail_first(exc)
                continue
            if batch is None:
                return
            self._execute(*batch)

    def _execute(self, kind: str, parts: list[tuple[_Job, int, int]]) -> None:
        """Run one batch and answer its jobs; any fault, in the model or here, fails this batch's jobs only."""
        outer, self._running = self._running, Priority(parts[0][0].priority)
        if outer is None:
            self._batch_started = time.perf_counter()
        try:
            items = [item for job, lo, hi in parts for item in job.items[lo:hi]]
            if kind == "text":
                vectors = self.model.embed_texts(items)
            else:
                vectors = self.model.embed_windows(items)
            if len(vectors) != len(items):
                raise RuntimeError(f"the model returned {len(vectors)} vectors for {len(items)} inputs")
            self._finish(parts, vectors, None)
        except BaseException as exc:  # delivered to every caller in the batch
            if not isinstance(exc, Exception):  # SystemExit and the like must not reach the event loop as such
                exc = RuntimeError(f"the model worker was interrupted: {exc!r}")
            self._finish(parts, None, exc)
        finally:
            self._running = outer
            if outer is None:
                self._batch_started = None

    def _fail_first(self, error: BaseException) -> None:
        with self._cond:
            job = heapq.heappop(self._heap) if self._heap else None
        if job is not None:
            self._resolve(job, None, error if isinstance(error, Exception) else RuntimeError(repr(error)))

    def _run_texts(self) -> None:
        """Called by a model that must wait before audio (still loading): the text jobs queued meanwhile run now."""
        while (batch := self._take_texts()) is not None:
            self._execute(*batch)

    def _run_urgent(self) -> None:
        """Called by the model between layers of a batch: interactive jobs that arrived meanwhile run now, and while
        a request is held (see hold) the batch waits here for its next job or its end."""
        if self._running is None or self._running == Priority.INTERACTIVE:
            return
        while True:
            while (batch := self._take_batch(urgent_only=True)) is not None:
                self._execute(*batch)
            with self._cond:  # a held request may still submit work: wait for it, or for the hold to end
                left = self._held_since + self.hold_seconds - time.perf_counter()
                if self._holds == 0 or self._stopping or left <= 0:
                    return
                if not self._urgent_waiting():
                    self._cond.wait(left)

    def _finish(
        self, parts: list[tuple[_Job, int, int]], vectors: np.ndarray | None, error: BaseException | None
    ) -> None:
        offset = 0
        now = time.perf_counter()
        finished: list[_Job] = []
        with self._cond:
            self._batches += 1
            size = sum(hi - lo for _, lo, hi in parts)
            self._batch_items += size
            self._max_batch = max(self._max_batch, size)
            for job, lo, hi in parts:
                if job not in self._heap:
                    continue  # already answered (stop() gave up on it)
                if error is None:
                    assert vectors is not None
                    job.results.append(vectors[offset : offset + hi - lo])
                    offset += hi - lo
                    job.done = hi
                if error is None and job.done < len(job.items):
                    continue  # partly done: it keeps its place and gets the next batch
                self._heap.remove(job)
                heapq.heapify(self._heap)
                self._jobs_done += 1
                self._latency[Priority(job.priority).name.lower()].append(now - job.enqueued)
                finished.append(job)
        for job in finished:  # out of the queue now, so each must be answered here, whatever happens
            try:
                value = None if error is not None else np.concatenate(job.results)
                self._resolve(job, value, error)
            except Exception as exc:
                self._resolve(job, None, exc)
            started = job.started if job.started is not None else now
            self.metrics.job(Priority(job.priority).name.lower(), started - job.enqueued, now - job.enqueued)

    @staticmethod
    def _resolve(job: _Job, value: np.ndarray | None, error: BaseException | None) -> None:
        def deliver() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)  # type: ignore[arg-type]

        try:
            job.loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            log.debug("event loop closed before a job finished")

    def stats(self) -> QueueStats:
        """Depth, batch sizes and latency percentiles per priority."""

        def pct(values: deque[float], q: float) -> float:
            return float(np.percentile(np.array(values), q) * 1000) if values else 0.0

        with self._cond:
            return QueueStats(
                depth=len(self._heap),
                jobs_done=self._jobs_done,
                batches=self._batches,
                mean_batch=self._batch_items / self._batches if self._batches else 0.0,
                max_batch=self._max_batch,
                latency_p50_ms={k: pct(v, 50) for k, v in self._latency.items()},
                latency_p95_ms={k: pct(v, 95) for k, v in self._latency.items()},
            )
