"""Encoding: decode in threads, embed through the job queue, label, cache text vectors. Loads the model on first use."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.audio import Audio, Limits, decode
from core.config import Config
from core.errors import Busy, UserError
from core.jobs import Jobs, Priority
from core.labels import Labeler, builtin_vocabulary
from core.messages import Label
from core.store import Store

if TYPE_CHECKING:
    from core.embedder import Embedder

log = logging.getLogger(__name__)

TEXT_CACHE = 2048


@dataclass(frozen=True)
class Embedded:
    """A decoded clip with its window vectors and file vector."""

    audio: Audio
    spans: tuple[tuple[float, float], ...]
    windows: np.ndarray
    vector: np.ndarray


class Encoder:
    """Turns sound and text into vectors; the model and its worker start on first use, or at start() in a server."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.embedder: Embedder | None = None
        self.queue: Jobs | None = None
        self.labeler: Labeler | None = None
        self._loading = asyncio.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        audio = config.audio
        timeout, memory = audio.decode_timeout_seconds, audio.ffmpeg_memory_bytes
        self.add_limits = Limits(audio.max_add_bytes, audio.max_add_seconds, timeout, memory)
        self.query_limits = Limits(audio.max_query_bytes, audio.max_query_seconds, timeout, memory)

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (0 before it is loaded)."""
        return self.queue.depth if self.queue is not None else 0

    async def start(self) -> None:
        """Load the model and start its worker, if not done yet."""
        async with self._loading:
            if self.queue is not None:
                return
            from core.embedder import Embedder
            from core.jobs import JobQueue

            embedder = await asyncio.to_thread(Embedder.load, self.config.model)
            await self._check_library(embedder)
            queue = JobQueue(
                embedder, self.config.queue.max_pending, self.config.queue.max_batch, self.config.model.batch_size
            )
            queue.start()
            search = self.config.search
            self.labeler = Labeler(
                self.store,
                queue,
                embedder.fingerprint,
                search.label_prompt,
                embedder.logit_scale,
                builtin_vocabulary(search.vocabulary),
            )
            self.embedder, self.queue = embedder, queue

    async def stop(self) -> None:
        """Stop the worker (jobs still queued are answered Busy)."""
        if self.queue is not None:
            await self.queue.stop()

    async def warm(self) -> None:
        """Embed the built-in vocabulary at bulk priority, so the first "what is this?" is quick."""
        try:
            await (await self._labels()).warm()
        except Busy:
            log.info("label warm-up skipped: queue busy or shutting down")

    async def _check_library(self, embedder: Embedder) -> None:
        stored_dim = await self.store.get_meta("embedding_dim")
        if stored_dim is not None and int(stored_dim) != embedder.dim:
            raise UserError(
                f"This library was built with a {stored_dim}-dimensional model, but {self.config.model.id} gives "
                f"{embedder.dim} dimensions. Use the original model, or a new data directory."
            )
        stored_model = await self.store.get_meta("model")
        if stored_model not in (None, embedder.fingerprint):
            log.warning("the library's vectors came from another model checkpoint; results may be poor")
        await self.store.set_meta("embedding_dim", str(embedder.dim))
        await self.store.set_meta("model", embedder.fingerprint)

    async def _jobs(self) -> tuple[Embedder, Jobs]:
        await self.start()
        assert self.embedder is not None and self.queue is not None
        return self.embedder, self.queue

    async def _labels(self) -> Labeler:
        await self.start()
        assert self.labeler is not None
        return self.labeler

    def check_room(self) -> None:
        """A full model queue answers busy before anything is downloaded or decoded."""
        if self.depth >= self.config.queue.max_pending:
            raise Busy("I'm busy right now; please try again in a moment.")

    async def decode(self, data: bytes, limits: Limits) -> Audio:
        """Decode in a thread so the loop stays free."""
        return await asyncio.to_thread(decode, data, limits)

    async def embed_audio(self, audio: Audio, priority: Priority, wait: bool = False) -> Embedded:
        """Window a clip and embed it; the file vector is the normalised mean of its windows."""
        from core.embedder import normalize

        embedder, queue = await self._jobs()
        spans, clips = embedder.clip_windows(audio.samples)
        vectors = await queue.embed_clips(clips, priority, wait=wait)
        return Embedded(audio, tuple(w.seconds for w in spans), vectors, normalize(vectors.mean(axis=0)))

    async def embed_query(self, data: bytes) -> Embedded:
        """Decode and embed a query clip under the query limits, ahead of other work."""
        audio = await self.decode(data, self.query_limits)
        return await self.embed_audio(audio, Priority.INTERACTIVE)

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
