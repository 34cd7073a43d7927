"""The engine: owns the lifespan of store, index, model and worker, and answers requests."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core import replies
from core.audio import Audio, Limits, check_declared, decode, export_preview, sha256
from core.config import Config
from core.embedder import Embedder, normalize
from core.errors import Busy, NotAllowed, NotFound, QuotaExceeded, RateLimited, UserError
from core.files import FileStore, display_name, safe_ext
from core.index import IndexSet
from core.jobs import JobQueue, Jobs, Priority
from core.labels import Labeler, builtin_vocabulary
from core.messages import Added, AudioFile, AudioRef, Command, Hit, Label, Reply, ReplyKind, Request, SpaceStats
from core.ratelimit import RateLimiter
from core.search import best_window, reciprocal_rank_fusion, vector_candidates
from core.store import NewSample, SqliteStore, Store

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0
QUERY_CACHE = 512


@dataclass(frozen=True)
class Embedded:
    """A decoded clip with its window vectors and file vector."""

    audio: Audio
    spans: tuple[tuple[float, float], ...]
    windows: np.ndarray
    vector: np.ndarray


@dataclass(frozen=True)
class _Query:
    """A search kept for paging: a vector and, for text searches, the words."""

    spaces: tuple[str, ...]
    vector: np.ndarray
    text: str
    k: int
    title: str


class Engine:
    """The core service every adapter and the CLI talk to."""

    def __init__(self, config: Config, store: Store, files: FileStore, indexes: IndexSet) -> None:
        self.config = config
        self.store = store
        self.files = files
        self.indexes = indexes
        self.embedder: Embedder | None = None
        self.queue: Jobs | None = None
        self.labeler: Labeler | None = None
        self.limiter = RateLimiter(config.limits.requests_per_minute)
        self._mutate = asyncio.Lock()  # store commit + index update happen as one step
        self._tasks: set[asyncio.Task[object]] = set()
        self._queries: OrderedDict[str, _Query] = OrderedDict()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.add_limits = Limits(
            config.audio.max_add_bytes, config.audio.max_add_seconds, config.audio.decode_timeout_seconds
        )
        self.query_limits = Limits(
            config.audio.max_query_bytes, config.audio.max_query_seconds, config.audio.decode_timeout_seconds
        )

    # ----------------------------------------------------------------- lifespan

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config, warm_labels: bool = True) -> AsyncIterator[Engine]:
        """Open store, indexes, model and worker in order; close them in reverse."""
        async with AsyncExitStack() as stack:
            data = Path(config.data_dir)
            store = await SqliteStore.open(data / "shira.db")
            stack.push_async_callback(store.close)
            engine = cls(config, store, FileStore(data / "files"), IndexSet(data / "index", config.index))
            await engine._check_indexes()
            stack.push_async_callback(engine._save_indexes)
            embedder = await asyncio.to_thread(Embedder.load, config.model)
            await engine._attach_model(embedder)
            queue = JobQueue(embedder, config.queue.max_pending, config.queue.max_batch, config.model.batch_size)
            queue.start()
            stack.push_async_callback(queue.stop)
            engine.queue = queue
            engine.labeler = Labeler(
                store,
                queue,
                embedder.fingerprint,
                config.search.label_prompt,
                embedder.logit_scale,
                builtin_vocabulary(config.search.vocabulary),
            )
            engine.spawn(engine._flush_loop(), "index-flush")
            if warm_labels:
                engine.spawn(engine._warm(), "label-warm-up")
            stack.push_async_callback(engine._stop_tasks)
            yield engine

    def spawn(self, coroutine: Coroutine[object, object, object], name: str) -> asyncio.Task[object]:
        """Run a background task; its failure is logged by one handler instead of vanishing."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _warm(self) -> None:
        assert self.labeler is not None
        try:
            await self.labeler.warm()
        except Busy:
            log.info("label warm-up skipped: queue busy or shutting down")

    async def _attach_model(self, embedder: Embedder) -> None:
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
        self.indexes.dim = embedder.dim
        self.embedder = embedder

    async def _check_indexes(self) -> None:
        """Load each space's saved index, rebuilding any that is missing or stale."""
        for space in await self.store.spaces():
            revision = await self.store.revision(space)
            count = await self.store.count(space)
            if not self.indexes.try_load(space, revision, count):
                await self._rebuild(space)

    async def _rebuild(self, space: str) -> None:
        revision = await self.store.revision(space)
        ids, vectors = await self.store.vectors(space)
        await asyncio.to_thread(self.indexes.rebuild, space, ids, vectors, revision)

    async def _ensure_index(self, space: str) -> None:
        """Make the space's index match the store, rebuilding it if another process changed the space."""
        if self.indexes.revision(space) != await self.store.revision(space):
            await self._rebuild(space)

    async def _save_indexes(self) -> None:
        for space in self.indexes.dirty():
            await asyncio.to_thread(self.indexes.save, space)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except OSError:
                log.exception("saving indexes failed; they will be rebuilt from the store if needed")

    async def flush(self) -> None:
        """Save every changed index now."""
        async with self._mutate:
            await self._save_indexes()

    # ----------------------------------------------------------------- embedding

    def _queue(self) -> Jobs:
        if self.queue is None:
            raise RuntimeError("engine is not open")
        return self.queue

    def _labeler(self) -> Labeler:
        if self.labeler is None:
            raise RuntimeError("engine is not open")
        return self.labeler

    async def embed_audio(self, audio: Audio, priority: Priority, wait: bool = False) -> Embedded:
        """Window a clip and embed it; the file vector is the normalised mean of its windows."""
        assert self.embedder is not None
        spans, clips = self.embedder.clip_windows(audio.samples)
        vectors = await self._queue().embed_clips(clips, priority, wait=wait)
        return Embedded(audio, tuple(w.seconds for w in spans), vectors, normalize(vectors.mean(axis=0)))

    async def embed_text(self, text: str) -> np.ndarray:
        """A text query's vector, cached per text."""
        key = " ".join(text.lower().split())
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        vector = (await self._queue().embed_texts([key], Priority.INTERACTIVE))[0]
        self._text_cache[key] = vector
        if len(self._text_cache) > 2048:
            self._text_cache.popitem(last=False)
        return vector

    async def decode(self, data: bytes, limits: Limits) -> Audio:
        """Decode in a thread so the loop stays free."""
        return await asyncio.to_thread(decode, data, limits)

    # ----------------------------------------------------------------- operations

    async def add(
        self,
        space: str,
        data: bytes,
        filename: str,
        uploader: str = "",
        description: str = "",
        source: str = "",
        priority: Priority = Priority.ADD,
        platform: str = "",
        platform_file_id: str | None = None,
    ) -> Added:
        """Add one file to a space: dedupe by hash, decode, embed, tag, store, index."""
        name = display_name(filename)
        digest = sha256(data)
        existing = await self.store.find_by_sha(space, digest)
        if existing is not None:
            row = await self.store.get_sample(existing)
            return Added(existing, row.name if row else name, row.duration if row else 0.0, duplicate=True)
        await self._check_quota(space)
        audio = await self.decode(data, self.add_limits)
        embedded = await self.embed_audio(audio, priority, wait=priority == Priority.BULK)
        near = await self._near_duplicates(space, embedded.vector, platform)
        labels = await self._labeler().classify(
            embedded.vector, await self.store.space_labels(space), self.config.search.autotags, priority
        )
        tags = tuple(
            (label.label, label.score, True) for label in labels if label.score >= self.config.search.autotag_min_score
        )
        ext = safe_ext(filename)
        sample = NewSample(
            space=space,
            sha256=digest,
            ext=ext,
            name=name,
            uploader=uploader,
            description=description.strip()[:1000],
            duration=audio.duration,
            source=source,
            vector=embedded.vector,
            segments=tuple((s, e, v) for (s, e), v in zip(embedded.spans, embedded.windows, strict=True)),
            tags=tags,
            platform=platform,
            platform_file_id=platform_file_id,
        )
        async with self._mutate:
            existing = await self.store.find_by_sha(space, digest)  # a concurrent add of the same file won
            if existing is not None:
                return Added(existing, name, audio.duration, duplicate=True)
            # stored under the lock, so a removal elsewhere can't delete the file before this row commits
            stored = await asyncio.to_thread(self.files.put, data, digest, ext)
            sample = replace(sample, ext=stored.suffix)  # one file per hash, whatever each upload was called
            await self._ensure_index(space)
            change = await self.store.add_sample(sample)
            sample_id = change.sample_id
            if not self.indexes.add(space, sample_id, embedded.vector, change.revision) or self.indexes.needs_rebuild(
                space
            ):
                await self._rebuild(space)
        log.info("added #%d %r to %s (%.1f s)", sample_id, name, space, audio.duration)
        return Added(sample_id, name, audio.duration, tuple(t for t, _, _ in tags), near_duplicates=tuple(near))

    async def _check_quota(self, space: str) -> None:
        quota = self.config.limits.space_quota
        if quota and await self.store.count(space) >= quota:
            raise QuotaExceeded(f"This library is full ({quota} sounds). Remove some before adding more.")

    def _check_room(self) -> None:
        """A full model queue answers busy before anything is downloaded or decoded."""
        if self._queue().depth >= self.config.queue.max_pending:
            raise Busy("I'm busy right now; please try again in a moment.")

    async def _near_duplicates(self, space: str, vector: np.ndarray, platform: str) -> list[Hit]:
        await self._ensure_index(space)
        found = [
            (i, s)
            for i, s in vector_candidates(self.indexes, [space], vector, 3)
            if s >= self.config.search.near_duplicate
        ]
        return await self._hits(found, vector, platform)

    async def remove(self, space: str, sample_id: int, user: str, is_admin: bool) -> str:
        """Remove a sample if the user uploaded it or is an admin; returns its name."""
        row = await self.store.get_sample(sample_id)
        if row is None or row.space != space:
            raise NotFound(f"There is no sound #{sample_id} in this library.")
        if row.uploader != user and not is_admin:
            raise NotAllowed(f"Only the person who added #{sample_id} or an admin can remove it.")
        async with self._mutate:
            await self._ensure_index(space)
            change = await self.store.remove_sample(sample_id)
            if change is None:
                raise NotFound(f"There is no sound #{sample_id} in this library.")
            if not self.indexes.remove(space, sample_id, change.revision):
                await self._rebuild(space)
            if not await self.store.sha_in_use(change.sha256):
                await asyncio.to_thread(self.files.delete, change.sha256, row.ext)
        log.info("removed #%d from %s", sample_id, space)
        return row.name

    async def search_vector(
        self,
        spaces: tuple[str, ...],
        vector: np.ndarray,
        text: str,
        k: int,
        page: int,
        platform: str,
        lexical: list[int] | None = None,
    ) -> tuple[list[Hit], bool]:
        """One page of results for a query vector, fused with lexical matches when text is given.

        lexical: the store's lexical ranking for text, if the caller already fetched it (see search_text).
        """
        for space in spaces:
            await self._ensure_index(space)
        pool = _pool(k, page)
        candidates = vector_candidates(self.indexes, spaces, vector, pool)
        order = [i for i, _ in candidates]
        if text and self.config.search.hybrid:
            if lexical is None:
                lexical = await self.store.lexical(list(spaces), text, pool)
            order = reciprocal_rank_fusion([order, lexical], self.config.search.rrf_k)
        chosen = order[page * k : (page + 1) * k]
        scores = dict(candidates)
        missing = [i for i in chosen if i not in scores]
        for sample_id, stored in (await self.store.sample_vectors(missing)).items():
            scores[sample_id] = float(np.dot(stored, vector))
        hits = await self._hits([(i, scores[i]) for i in chosen if i in scores], vector, platform)
        return hits, len(order) > (page + 1) * k

    async def _hits(self, found: list[tuple[int, float]], query: np.ndarray, platform: str) -> list[Hit]:
        ids = [i for i, _ in found]
        rows = await self.store.get_samples(ids)
        windows = await self.store.segments(ids)
        file_ids = await self.store.file_ids(ids, platform)
        hits = []
        for sample_id, score in found:
            row = rows.get(sample_id)
            if row is None:
                continue  # removed since the index was searched
            start, end = best_window(query, windows.get(sample_id, []))
            hits.append(
                Hit(
                    sample_id=sample_id,
                    name=row.name,
                    score=score,
                    start=start,
                    end=end,
                    duration=row.duration,
                    space=row.space,
                    tags=row.tags,
                    description=row.description,
                    uploader=row.uploader,
                    platform_file_id=file_ids.get(sample_id),
                )
            )
        return hits

    async def labels(self, vector: np.ndarray, space: str | None, top: int) -> list[Label]:
        """Zero-shot labels for an audio vector, with the space's own labels added."""
        extra = await self.store.space_labels(space) if space else []
        return await self._labeler().classify(vector, extra, top)

    async def audio_file(self, sample_id: int, spaces: tuple[str, ...], platform: str) -> AudioFile:
        """A sample the requester may see, as a file to send."""
        row = await self.store.get_sample(sample_id)
        if row is None or row.space not in spaces:
            raise NotFound(f"There is no sound #{sample_id} in this library.")
        file_id = (await self.store.file_ids([sample_id], platform)).get(sample_id)
        return AudioFile(sample_id, row.name, self.files.path(row.sha256, row.ext), row.duration, file_id)

    async def preview(self, sample_id: int, fmt: str = "ogg", max_bytes: int = 10 * 1024 * 1024) -> Path:
        """An OGG/Opus or MP3 preview of a sample that fits max_bytes, cached on disk."""
        row = await self.store.get_sample(sample_id)
        if row is None:
            raise NotFound(f"There is no sound #{sample_id} any more.")
        path = Path(self.config.data_dir) / "previews" / f"{row.sha256}-{max_bytes}.{fmt}"
        if path.exists():
            return path
        data = await asyncio.to_thread(self.files.path(row.sha256, row.ext).read_bytes)
        audio = await self.decode(data, self.add_limits)
        return await asyncio.to_thread(export_preview, audio, path, fmt, max_bytes)

    async def remember_file_id(self, sample_id: int, platform: str, file_id: str) -> None:
        """Store a platform's reusable handle for a sample."""
        await self.store.set_file_id(sample_id, platform, file_id)

    async def space_stats(self, space: str) -> SpaceStats:
        """Counts for one space."""
        samples, seconds, uploaders = await self.store.stats(space)
        return SpaceStats(space, samples, seconds, uploaders, len(await self.store.space_labels(space)))

    # ----------------------------------------------------------------- requests

    async def handle(self, request: Request) -> Reply:
        """Answer one request; user errors become friendly replies, others an apology with an error id."""
        try:
            if request.command not in (Command.HELP, Command.START) and not self.limiter.allow(request.user):
                wait = self.limiter.retry_after(request.user)
                raise RateLimited(f"You're sending requests too quickly; try again in {wait:.0f} s.")
            return await self._dispatch(request)
        except (Busy, RateLimited) as exc:
            return replies.busy(str(exc))
        except UserError as exc:
            return replies.error(str(exc))
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("request %s from %s failed (error id %s)", request.command, request.platform, error_id)
            return replies.error(f"Sorry, something went wrong on my side (error id {error_id}).", error_id)

    def _spaces(self, request: Request) -> tuple[str, ...]:
        return tuple(dict.fromkeys((request.space, *request.extra_spaces)))

    def _k(self, request: Request) -> int:
        return max(1, min(request.k or self.config.search.k, self.config.search.max_k))

    async def _dispatch(self, request: Request) -> Reply:
        handlers: dict[Command, Callable[[Request], Awaitable[Reply]]] = {
            Command.SEARCH: self._on_search,
            Command.SIMILAR: self._on_similar,
            Command.IDENTIFY: self._on_identify,
            Command.ADD: self._on_add,
            Command.REMOVE: self._on_remove,
            Command.STATS: self._on_stats,
            Command.HELP: self._on_help,
            Command.START: self._on_help,
            Command.PAGE: self._on_page,
            Command.MORE: self._on_more,
            Command.PLAY: self._on_play,
            Command.LABELS: self._on_labels,
        }
        return await handlers[request.command](request)

    async def _fetch(self, ref: AudioRef, limits: Limits) -> bytes:
        check_declared(ref.size, ref.duration, limits)
        try:
            data = await ref.fetch()
        except UserError:
            raise
        except Exception as exc:
            log.info("download of %r failed: %r", ref.filename, exc)
            raise UserError("I couldn't download that file; please send it again.") from exc
        check_declared(len(data), None, limits)
        return data

    def _one_audio(self, request: Request, what: str) -> AudioRef:
        if not request.audio:
            raise UserError(f"Please attach a sound (or reply to one) to {what}.")
        return request.audio[0]

    async def embed_query(self, data: bytes) -> Embedded:
        """Decode and embed a query clip under the query limits, ahead of other work."""
        audio = await self.decode(data, self.query_limits)
        return await self.embed_audio(audio, Priority.INTERACTIVE)

    async def search_text(
        self, spaces: tuple[str, ...], text: str, k: int, page: int = 0, platform: str = ""
    ) -> tuple[list[Hit], bool]:
        """One page of text-to-audio results; the lexical lookup runs while the model embeds the text."""
        vector, lexical = await self._embed_and_match(spaces, text, k, page)
        return await self.search_vector(spaces, vector, text, k, page, platform, lexical)

    async def _embed_and_match(
        self, spaces: tuple[str, ...], text: str, k: int, page: int
    ) -> tuple[np.ndarray, list[int] | None]:
        """The text's vector and, in hybrid mode, its lexical ranking, fetched concurrently."""
        if not self.config.search.hybrid:
            return await self.embed_text(text), None
        vector, lexical = await asyncio.gather(
            self.embed_text(text), self.store.lexical(list(spaces), text, _pool(k, page))
        )
        return vector, lexical

    async def _query_audio(self, request: Request) -> Embedded:
        ref = self._one_audio(request, "search with")
        self._check_room()
        return await self.embed_query(await self._fetch(ref, self.query_limits))

    async def _page(
        self, query: _Query, query_id: str, page: int, platform: str, lexical: list[int] | None = None
    ) -> Reply:
        hits, has_more = await self.search_vector(
            query.spaces, query.vector, query.text, query.k, page, platform, lexical
        )
        audio = await self._top_audio(hits, platform) if page == 0 else None
        return replies.results(query.title, hits, query_id, page, query.k, has_more, audio)

    async def _top_audio(self, hits: list[Hit], platform: str) -> AudioFile | None:
        if not hits:
            return None
        top = hits[0]
        row = await self.store.get_sample(top.sample_id)
        if row is None:
            return None
        return AudioFile(
            top.sample_id, top.name, self.files.path(row.sha256, row.ext), top.duration, top.platform_file_id
        )

    def _remember(self, query: _Query) -> str:
        query_id = secrets.token_hex(4)
        self._queries[query_id] = query
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return query_id

    async def _on_search(self, request: Request) -> Reply:
        text = " ".join(request.text.split())
        if not text:
            raise UserError("What should I look for? Try: /search thunder")
        spaces, k = self._spaces(request), self._k(request)
        vector, lexical = await self._embed_and_match(spaces, text[:500], k, request.page)
        query = _Query(spaces, vector, text[:500], k, f'Results for "{text[:100]}":')
        return await self._page(query, self._remember(query), request.page, request.platform, lexical)

    async def _on_similar(self, request: Request) -> Reply:
        embedded = await self._query_audio(request)
        query = _Query(self._spaces(request), embedded.vector, "", self._k(request), "Similar sounds:")
        return await self._page(query, self._remember(query), 0, request.platform)

    async def _on_more(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        spaces = self._spaces(request)
        row = await self.store.get_sample(sample_id)
        if row is None or row.space not in spaces:
            raise NotFound(f"There is no sound #{sample_id} in this library.")
        vector = (await self.store.sample_vectors([sample_id]))[sample_id]
        query = _Query(spaces, vector, "", self._k(request), f"More like #{sample_id} {row.name}:")
        return await self._page(query, self._remember(query), 0, request.platform)

    async def _on_page(self, request: Request) -> Reply:
        query = self._queries.get(request.text.strip())
        if query is None or not set(query.spaces) <= set(self._spaces(request)):  # a query id from another space
            raise UserError("That search has expired; please run it again.")
        return await self._page(query, request.text.strip(), max(0, request.page), request.platform)

    async def _on_identify(self, request: Request) -> Reply:
        embedded = await self._query_audio(request)
        labels = await self.labels(embedded.vector, request.space, self.config.search.labels)
        query = _Query(self._spaces(request), embedded.vector, "", self._k(request), "Similar sounds:")
        query_id = self._remember(query)
        hits, has_more = await self.search_vector(query.spaces, query.vector, "", query.k, 0, request.platform)
        return replies.identify(labels, hits, query_id, has_more, await self._top_audio(hits, request.platform))

    async def _on_add(self, request: Request) -> Reply:
        ref = self._one_audio(request, "add it")
        await self._check_quota(request.space)  # before downloading anything
        self._check_room()
        data = await self._fetch(ref, self.add_limits)
        result = await self.add(
            request.space,
            data,
            ref.filename,
            uploader=request.user,
            description=request.text,
            platform=request.platform,
            platform_file_id=ref.platform_file_id,
        )
        return replies.added(result)

    async def _on_remove(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        name = await self.remove(request.space, sample_id, request.user, request.is_admin)
        return Reply(ReplyKind.REMOVED, f"Removed #{sample_id} {name}.")

    async def _on_stats(self, request: Request) -> Reply:
        return replies.stats(await self.space_stats(request.space), self._queue().depth)

    async def _on_help(self, request: Request) -> Reply:
        return Reply(ReplyKind.HELP, replies.HELP)

    async def _on_play(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        audio = await self.audio_file(sample_id, self._spaces(request), request.platform)
        return Reply(ReplyKind.AUDIO, f"#{sample_id} {audio.title} ({audio.duration:.1f} s)", audio=audio)

    async def _on_labels(self, request: Request) -> Reply:
        action, _, label = request.text.strip().partition(" ")
        label = " ".join(label.split())[:100]
        if action == "add" and label:
            await self.store.add_space_label(request.space, label)
            return replies.text(f'Added the label "{label}" to this library.')
        if action == "remove" and label:
            if not request.is_admin:
                raise NotAllowed("Only an admin can remove labels.")
            if await self.store.remove_space_label(request.space, label):
                return replies.text(f'Removed the label "{label}".')
            raise NotFound(f'This library has no label "{label}".')
        if action:
            raise UserError("Use /labels, /labels add <label> or /labels remove <label>.")
        own = await self.store.space_labels(request.space)
        return replies.text("This library's labels: " + ", ".join(own) if own else "This library has no labels yet.")


def _pool(k: int, page: int) -> int:
    """How many candidates each ranking contributes to one page of results."""
    return max((page + 1) * k + 1, 50)


def parse_id(text: str) -> int:
    """A sample id from user text such as '12' or '#12'."""
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise UserError("Please give a sample number, for example: /remove 12")
    return int(value)
