"""Encoding: decode in threads, embed through the job queue, label, cache text vectors. Loads the model on first use."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.audio import SAMPLE_RATE, Audio, Limits, decode, decode_stream
from core.budget import decoded_bytes
from core.config import Config
from core.errors import Busy, UserError
from core.jobs import STOP_SECONDS, Jobs, Model, ModelInfo, Priority
from core.labels import Labeler, builtin_vocabulary
from core.messages import Label
from core.metrics import Metrics, NoMetrics
from core.speedups import on_own_thread
from core.store import Store

if TYPE_CHECKING:
    from core.embedder import Window
    from core.text_first import TextFirst

log = logging.getLogger(__name__)

TEXT_CACHE = 2048
WHOLE_SECONDS = 60.0  # additions up to this long are held whole; longer ones are embedded window by window


@dataclass(frozen=True)
class Embedded:
    """A clip's length with its window vectors and file vector (the samples themselves are not kept)."""

    duration: float
    spans: tuple[tuple[float, float], ...]
    windows: np.ndarray
    vector: np.ndarray


class Encoder:
    """Turns sound and text into vectors; the model and its worker start on first use, or at start() in a server."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or NoMetrics()
        self.model_info: ModelInfo | None = None
        self.queue: Jobs | None = None
        self.text_first: TextFirst | None = None  # texts served while the full model loads behind them
        self.labeler: Labeler | None = None
        self._loading = asyncio.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        audio = config.audio
        timeout, memory = audio.decode_timeout_seconds, audio.ffmpeg_memory_bytes
        self.add_limits = Limits(audio.max_add_bytes, audio.max_add_seconds, timeout, memory)
        self.query_limits = Limits(audio.max_query_bytes, audio.max_query_seconds, timeout, memory)
        model = config.model
        window = decoded_bytes(model.window_seconds)
        # Beyond its file, an addition holds at most: chunks of a short one and their joined copy, or, streaming, a
        # chunk, the samples the next window needs, and two groups of copied windows (one embedding, one filling).
        self.addition_bytes = max(2 * decoded_bytes(WHOLE_SECONDS), (2 * model.batch_size + 3) * window)

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (0 before it is loaded)."""
        return self.queue.depth if self.queue is not None else 0

    def interactive(self) -> AbstractContextManager[None]:
        """Hold running bulk batches while a chat request is answered (see JobQueue.hold)."""
        return self.queue.hold() if self.queue is not None else nullcontext()

    async def start(self) -> None:
        """Load the model and start its worker (or, with [cluster] redis_url, reach the workers), if not done yet."""
        async with self._loading:
            if self.queue is not None:
                return
            queue: Jobs
            if self.config.cluster.redis_url:
                from core.streams import StreamJobs

                queue = await StreamJobs.connect(self.config, self.metrics)
                info = await queue.model_info()
            else:
                queue, info = await self._local_queue()
            try:
                await self._check_library(info)
            except BaseException:
                await queue.stop()
                raise
            queue.start()
            search = self.config.search
            self.labeler = Labeler(
                self.store,
                queue,
                info.fingerprint,
                search.label_prompt,
                info.logit_scale,
                builtin_vocabulary(search.vocabulary),
            )
            self.model_info, self.queue = info, queue

    async def _local_queue(self) -> tuple[Jobs, ModelInfo]:
        """The model loaded here, behind an in-process queue (not started yet).

        When an earlier start exported the text tower, texts are served at once and the rest loads behind them.
        """
        from core.jobs import JobQueue

        model = self.config.model
        cache = Path(self.config.data_dir) / "cache"
        served: Model
        early = await asyncio.to_thread(self._text_first, cache)
        if early is not None:
            served, info, self.text_first = early, early.info, early
        else:
            from core.embedder import Embedder

            embedder = await on_own_thread(Embedder.load, model, cache)
            served, info = embedder, ModelInfo(embedder.fingerprint, embedder.dim, embedder.logit_scale)
        queue = JobQueue(
            served,
            self.config.queue.max_pending,
            self.config.queue.max_batch,
            model.batch_size,
            self.metrics,
            stuck_seconds=self.config.limits.request_seconds,
            window_seconds=model.window_seconds,
            hop_seconds=model.hop_seconds,
        )
        return queue, info

    def _text_first(self, cache: Path) -> TextFirst | None:
        """Texts from the cached ONNX tower while the full model loads in the background, if it can."""
        from core.checkpoint import locate
        from core.embedder import Embedder
        from core.text_first import TextFirst, open_text_first

        model = self.config.model
        early = open_text_first(model, Path(locate(model.id)), cache)
        if early is None:
            return None
        log.info("serving text from the cached ONNX text tower while the model loads")
        return TextFirst(*early, lambda text: Embedder.load(model, cache, text))

    async def stop(self) -> None:
        """Stop the worker (jobs still queued when it gives up waiting are answered Busy)."""
        if self.queue is not None:
            await self.queue.stop()
        if self.text_first is not None and not await asyncio.to_thread(self.text_first.settle, STOP_SECONDS):
            log.warning("the model was still loading after %.0f s; not waiting for it", STOP_SECONDS)

    def problem(self) -> str | None:
        """Why the model worker can't serve, or None (also before the model is loaded)."""
        if self.text_first is not None and (failed := self.text_first.problem()):
            return failed
        return self.queue.problem() if self.queue is not None else None

    async def warm(self) -> None:
        """Embed the built-in vocabulary at bulk priority, so the first "what is this?" is quick."""
        try:
            await (await self._labels()).warm()
        except Busy:
            log.info("label warm-up skipped: queue busy or shutting down")

    async def _check_library(self, info: ModelInfo) -> None:
        stored_dim = await self.store.get_meta("embedding_dim")
        if stored_dim is not None and int(stored_dim) != info.dim:
            raise UserError(
                f"This library was built with a {stored_dim}-dimensional model, but {self.config.model.id} gives "
                f"{info.dim} dimensions. Use the original model, or a new data directory."
            )
        stored_model = await self.store.get_meta("model")
        if stored_model not in (None, info.fingerprint):
            log.warning("the library's vectors came from another model checkpoint; results may be poor")
        await self.store.set_meta("embedding_dim", str(info.dim))
        await self.store.set_meta("model", info.fingerprint)

    async def _jobs(self) -> tuple[ModelInfo, Jobs]:
        await self.start()
        assert self.model_info is not None and self.queue is not None
        return self.model_info, self.queue

    async def _labels(self) -> Labeler:
        await self.start()
        assert self.labeler is not None
        return self.labeler

    def check_room(self) -> None:
        """A full model queue answers busy before anything is downloaded or decoded."""
        if self.depth >= self.config.queue.max_pending:
            raise Busy("I'm busy right now; please try again in a moment.")

    async def decode(self, data: bytes, limits: Limits, rate: int = SAMPLE_RATE) -> Audio:
        """Decode in a thread so the loop stays free."""
        return await asyncio.to_thread(decode, data, limits, rate)

    async def embed_audio(self, audio: Audio, priority: Priority, wait: bool = False) -> Embedded:
        """Window a clip and embed it; the file vector is the normalised mean of its windows."""
        from core.embedder import normalize, windows

        _, queue = await self._jobs()
        spans = windows(len(audio.samples), self.config.model.window_seconds, self.config.model.hop_seconds)
        clips = [audio.samples[w.start : w.end] for w in spans]
        vectors = await queue.embed_clips(clips, priority, wait=wait)
        return Embedded(audio.duration, tuple(w.seconds for w in spans), vectors, normalize(vectors.mean(axis=0)))

    async def measure(self, data: bytes, limits: Limits) -> Audio | int:
        """Decode once, in a thread: the audio itself if it is short enough to hold whole, else how many samples
        it has. Either way a sound over the limits is refused here, before any model work."""
        samples, count = await asyncio.to_thread(_measure, data, limits, decoded_bytes(WHOLE_SECONDS) // 4)
        return Audio(samples) if samples is not None else count

    async def embed_addition(self, data: bytes, priority: Priority, wait: bool = False) -> Embedded:
        """Decode and embed an addition; a long one is decoded a second time, window by window, so memory follows
        a group of windows rather than its length (see addition_bytes)."""
        from core.embedder import normalize, windows

        if self.config.cluster.redis_url:  # the workers decode it, with the same limits
            return await self._encoded(data, self.add_limits, priority, wait)
        measured = await self.measure(data, self.add_limits)
        if isinstance(measured, Audio):
            return await self.embed_audio(measured, priority, wait)
        _, queue = await self._jobs()
        model = self.config.model
        spans = windows(measured, model.window_seconds, model.hop_seconds)
        stream = _cut(decode_stream(data, self.add_limits, model.window_seconds), spans)
        vectors = await _embed_stream(stream, queue, model.batch_size, priority)
        duration = measured / SAMPLE_RATE
        return Embedded(duration, tuple(w.seconds for w in spans), vectors, normalize(vectors.mean(axis=0)))

    async def embed_query(self, data: bytes) -> Embedded:
        """Decode and embed a query clip under the query limits, ahead of other work."""
        return await self._encoded(data, self.query_limits, Priority.INTERACTIVE)

    async def _encoded(self, data: bytes, limits: Limits, priority: Priority, wait: bool = False) -> Embedded:
        """Embed an encoded sound through the queue, which decodes it (here, or at a worker)."""
        from core.embedder import normalize

        _, queue = await self._jobs()
        done = await queue.embed_encoded(data, limits, priority, wait)
        return Embedded(done.duration, done.spans, done.vectors, normalize(done.vectors.mean(axis=0)))

    async def embed_text(self, text: str) -> np.ndarray:
        """A text query's vector, cached per text."""
        key = " ".join(text.lower().split())
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        _, queue = await self._jobs()
        vector = (await queue.embed_texts([key], Priority.INTERACTIVE))[0]
        self._text_cache[key] = vector
        if len(self._text_cache) > TEXT_CACHE:
            self._text_cache.popitem(last=False)
        return vector

    async def embed_windows(self, clips: list[np.ndarray], priority: Priority) -> np.ndarray:
        """Vectors of clips already cut to length (a timeline's windows), waiting for room in the queue."""
        _, queue = await self._jobs()
        return await queue.embed_clips(clips, priority, wait=True)

    async def vocabulary(self) -> list[str]:
        """The built-in label vocabulary."""
        return list((await self._labels()).vocabulary)

    async def label_vectors(self, labels: list[str]) -> tuple[np.ndarray, float]:
        """The labels' prompt vectors (cached) and the model's logit scale."""
        labeler = await self._labels()
        return await labeler.vectors(labels), labeler.logit_scale

    async def labels(
        self, vector: np.ndarray, extra: list[str], top: int, priority: Priority = Priority.INTERACTIVE
    ) -> list[Label]:
        """Zero-shot labels for an audio vector from the built-in vocabulary plus extra."""
        return await (await self._labels()).classify(vector, extra, top, priority)


def _measure(data: bytes, limits: Limits, keep: int) -> tuple[np.ndarray | None, int]:
    """Decode to the end: the samples if there are at most keep of them, and how many there are."""
    chunks: list[np.ndarray] | None = []
    count = 0
    for chunk in decode_stream(data, limits):
        count += len(chunk)
        if chunks is not None and count <= keep:
            chunks.append(chunk)
        else:
            chunks = None  # too long to hold whole: only counted from here on
    return (np.concatenate(chunks) if chunks else None), count


def _cut(stream: Iterator[np.ndarray], spans: list[Window]) -> Iterator[np.ndarray]:
    """A copy of each span's samples, in order, from a stream of chunks; keeps only what later spans still need.
    Closing it closes the stream (and so stops ffmpeg)."""
    try:
        buffer, start = np.zeros(0, np.float32), 0  # buffer holds samples start .. start + len(buffer)
        pending = iter(spans)
        span = next(pending, None)
        for chunk in stream:
            if span is None:
                break
            buffer = np.concatenate((buffer, chunk))
            while span is not None and span.end <= start + len(buffer):
                yield buffer[span.start - start : span.end - start].copy()
                span = next(pending, None)
            keep = span.start if span is not None else start + len(buffer)
            buffer, start = buffer[keep - start :], keep
        if span is not None:
            raise RuntimeError(f"the second decode ended at {(start + len(buffer)) / SAMPLE_RATE:.1f} s, early")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


async def _embed_stream(stream: Iterator[np.ndarray], queue: Jobs, group: int, priority: Priority) -> np.ndarray:
    """Embed windows as a thread cuts them from the stream, a group at a time: while one group is with the model,
    the next is read, and no more. Each group waits for room in the queue (the addition was admitted already)."""
    loop = asyncio.get_running_loop()
    results: list[np.ndarray] = []
    reading: asyncio.Future[list[np.ndarray]] | None = None
    embedding: asyncio.Future[np.ndarray] | None = None
    try:
        while True:
            reading = loop.run_in_executor(None, lambda: list(itertools.islice(stream, group)))
            clips = await asyncio.shield(reading)  # cancelled, the read still finishes in its thread
            if embedding is not None:
                results.append(await embedding)
                embedding = None
            if not clips:
                break
            embedding = asyncio.ensure_future(queue.embed_clips(clips, priority, wait=True))
            del clips
    finally:
        if embedding is not None and embedding.done() and not embedding.cancelled():
            embedding.exception()  # retrieved: an error that ends the loop early is already on its way up
        elif embedding is not None:
            embedding.cancel()
        if reading is not None and not reading.done():  # close the stream (stopping ffmpeg) once that read ends
            reading.add_done_callback(lambda done: _close_later(loop, stream, done))
        else:
            _close_later(loop, stream, reading)
    return np.concatenate(results)


def _close_later(
    loop: asyncio.AbstractEventLoop, stream: Iterator[np.ndarray], read: asyncio.Future[Any] | None
) -> None:
    """Close a stream in a thread (closing kills and reaps ffmpeg); a read's failure was reported by its awaiter."""
    if read is not None and not read.cancelled():
        read.exception()  # retrieved, so it isn't reported again as never retrieved

    def close() -> None:
        try:
            getattr(stream, "close", lambda: None)()
        except Exception:
            log.exception("closing a decoder stream failed")

    loop.run_in_executor(None, close)
