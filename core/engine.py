"""The composition root: opens store, files, indexes and library first, the model only when asked, and the door."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from core.analyse import Analyser
from core.budget import Budget
from core.commands import Commands
from core.config import Config
from core.encoder import Encoder
from core.files import FileStore
from core.index import IndexSet
from core.ingest import Ingest
from core.library import Library
from core.messages import Reply, Request
from core.metrics import Metrics, NoMetrics
from core.previews import Previews
from core.search import Searcher
from core.speedups import use_openmp_wait
from core.store import SqliteStore, Store

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0


async def open_store(config: Config) -> Store:
    """The store the config asks for: PostgreSQL when [cluster] postgres_dsn is set, else SQLite in data_dir."""
    if config.cluster.postgres_dsn:
        from core.pgstore import PostgresStore

        return await PostgresStore.open(config.cluster.postgres_dsn)
    return await SqliteStore.open(Path(config.data_dir) / "shira.db")


class Engine:
    """Holds the parts of one running core; handle() is the only thing adapters and the CLI call."""

    def __init__(
        self, config: Config, store: Store, files: FileStore, indexes: IndexSet, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.files = files
        self.indexes = indexes
        self.metrics = metrics or NoMetrics()
        self.budget = Budget(config.limits.max_bytes_in_flight)
        previews = Previews(Path(config.data_dir) / "previews", config.audio.preview_cache_bytes)
        self.encoder = Encoder(config, store, self.metrics)
        self.library = Library(store, files, indexes, previews, self.encoder.add_limits, self.budget)
        self.searcher = Searcher(store, self.library, self.encoder, config.search)
        self.ingest = Ingest(config, store, self.library, self.encoder, self.searcher)
        timeout = max(config.audio.decode_timeout_seconds, config.timeline.max_seconds / 10)
        self.analyser = Analyser(config.timeline, self.encoder, config.audio.ffmpeg_memory_bytes, timeout)
        self.commands = Commands(
            config,
            store,
            self.library,
            self.encoder,
            self.searcher,
            self.ingest,
            self.analyser,
            self.budget,
            self.metrics,
        )
        self.metrics.gauge("queue_depth", lambda: self.encoder.depth)
        self.metrics.gauge("bytes_in_flight", lambda: self.budget.used)
        self.metrics.check("model worker", self.encoder.problem)
        self._tasks: set[asyncio.Task[object]] = set()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, config: Config, model: bool = True, warm_labels: bool = True, metrics: Metrics | None = None
    ) -> AsyncIterator[Engine]:
        """Open store, files, indexes and library; then, if model, the model and its worker. Close in reverse.

        Without model, the model still loads on the first request that needs an embedding; commands that need
        none (stats, remove, labels, play) never import torch.
        """
        # faiss brings its own OpenMP, which reads the wait policy when the indexes first import it: set it now, or
        # its idle threads spin after every search and take the core that SQLite, the loop or torch needs next.
        use_openmp_wait(config.model.openmp_wait)
        async with AsyncExitStack() as stack:
            data = Path(config.data_dir)
            store = await open_store(config)
            stack.push_async_callback(store.close)
            engine = cls(config, store, FileStore(data / "files"), IndexSet(data / "index", config.index), metrics)
            if config.cluster.redis_url:  # every frontend of the cluster charges the same rate-limit windows
                from core.shared_ratelimit import RedisRateLimits
                from core.streams import connect_redis

                redis = await connect_redis(config.cluster)
                stack.push_async_callback(redis.aclose)
                limits = config.limits
                engine.commands.limits = RedisRateLimits(
                    redis,
                    limits.requests_per_minute,
                    limits.library_requests_per_minute,
                    f"{config.cluster.key_prefix}:",
                )
            await engine.library.load_indexes()
            await engine.library.sweep()
            stack.push_async_callback(engine.library.flush)
            stack.push_async_callback(engine.encoder.stop)
            if model:
                await engine.encoder.start()
                engine.spawn(engine.library.backfill_prints(), "fingerprint-backfill")
                if warm_labels:
                    engine.spawn(engine.encoder.warm(), "label-warm-up")
            flush = engine.spawn(engine._flush_loop(), "index-flush")
            engine.metrics.check("index flush", lambda: "the index flush loop stopped" if flush.done() else None)
            stack.push_async_callback(engine._stop_tasks)
            yield engine

    async def handle(self, request: Request) -> Reply:
        """The one door: answer one request."""
        return await self.commands.handle(request)

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

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.library.flush()
            except OSError:
                log.exception("saving indexes failed; they will be rebuilt from the store if needed")
