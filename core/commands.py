"""The command handlers behind the one door: rate limits, error mapping, paging memory, one handler per command."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from core import replies
from core.audio import Limits, check_declared
from core.budget import Budget, Lease, decoded_bytes, download_bytes
from core.config import Config
from core.encoder import Embedded, Encoder
from core.errors import Busy, NotAllowed, NotFound, RateLimited, UserError
from core.files import attachment_name
from core.ingest import Ingest
from core.jobs import Priority
from core.library import Library
from core.messages import AudioFile, AudioRef, Command, Hit, Reply, ReplyKind, Request, SpaceStats
from core.metrics import Metrics, NoMetrics
from core.ratelimit import RateLimiter
from core.search import Searcher
from core.store import SampleRow, Store

log = logging.getLogger(__name__)

QUERY_CACHE = 512
PREVIEW_FORMAT = "ogg"
OPERATOR = "cli"  # the command line is the operator's own: no rate limit, may list every library
FREE = frozenset({Command.HELP, Command.START, Command.REMEMBER})
TOO_LONG = "That took too long; please try again."


@dataclass(frozen=True)
class _Query:
    """A search kept for paging: a vector and, for text searches, the words."""

    spaces: tuple[str, ...]
    vector: np.ndarray
    text: str
    k: int
    title: str
    exclude: int | None = None


class Commands:
    """Answers one request with one reply; user errors become friendly replies, others an apology with an id."""

    def __init__(
        self,
        config: Config,
        store: Store,
        library: Library,
        encoder: Encoder,
        searcher: Searcher,
        ingest: Ingest,
        budget: Budget | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.budget = budget or Budget(config.limits.max_bytes_in_flight)
        self.metrics = metrics or NoMetrics()
        self.store = store
        self.library = library
        self.encoder = encoder
        self.searcher = searcher
        self.ingest = ingest
        self.limiter = RateLimiter(config.limits.requests_per_minute)
        self._queries: OrderedDict[str, _Query] = OrderedDict()
        self._handlers: dict[Command, Callable[[Request], Awaitable[Reply]]] = {
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
            Command.REMEMBER: self._on_remember,
            Command.SPACES: self._on_spaces,
        }

    async def handle(self, request: Request) -> Reply:
        """Answer one request, within its deadline, and count it."""
        started = time.perf_counter()
        reply, outcome = await self._answer(request)
        self.metrics.request(request.command.value, outcome, time.perf_counter() - started)
        return reply

    async def _answer(self, request: Request) -> tuple[Reply, str]:
        """The reply and its outcome, for the metrics."""
        limits = self.config.limits
        deadline = asyncio.timeout(limits.bulk_request_seconds if request.bulk else limits.request_seconds)
        try:
            limited = request.platform != OPERATOR and request.command not in FREE
            if limited and not self.limiter.allow(request.user):
                wait = self.limiter.retry_after(request.user)
                raise RateLimited(f"You're sending requests too quickly; try again in {wait:.0f} s.")
            async with deadline:
                return await self._handlers[request.command](request), "ok"
        except RateLimited as exc:
            return replies.busy(str(exc)), "rate_limited"
        except Busy as exc:
            return replies.busy(str(exc)), "busy"
        except UserError as exc:
            return replies.error(str(exc)), "refused"
        except TimeoutError:
            if not deadline.expired():
                return self._apology(request), "error"
            log.warning("request %s from %s passed its deadline", request.command, request.platform)
            return replies.error(TOO_LONG), "timeout"
        except Exception:
            return self._apology(request), "error"

    def _apology(self, request: Request) -> Reply:
        """Log the exception being handled under a fresh error id, and apologise quoting it."""
        error_id = secrets.token_hex(4)
        log.exception("request %s from %s failed (error id %s)", request.command, request.platform, error_id)
        return replies.error(f"Sorry, something went wrong on my side (error id {error_id}).", error_id)

    # ----------------------------------------------------------------- pieces

    def _spaces(self, request: Request) -> tuple[str, ...]:
        return tuple(dict.fromkeys((request.space, *request.extra_spaces)))

    def _k(self, request: Request) -> int:
        return max(1, min(request.k or self.config.search.k, self.config.search.max_k))

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

    async def _lease(self, ref: AudioRef, limits: Limits, decoded: int, wait: bool = False) -> Lease:
        """Memory for a sound before it is downloaded: its file, as declared (or as large as allowed), and what
        decoding it holds at most. Chat requests are answered busy when the budget is full; bulk ones wait."""
        check_declared(ref.size, ref.duration, limits)  # too large is said as such, not as busy
        size = ref.size if ref.size is not None else limits.max_bytes
        need = max(download_bytes(size), size + decoded)
        return await self.budget.lease(need) if wait else self.budget.try_lease(need)

    def _one_audio(self, request: Request, what: str) -> AudioRef:
        if not request.audio:
            raise UserError(f"Please attach a sound (or reply to one) to {what}.")
        return request.audio[0]

    async def _query_audio(self, request: Request) -> Embedded:
        ref = self._one_audio(request, "search with")
        self.encoder.check_room()
        limits = self.encoder.query_limits
        decoded = 2 * decoded_bytes(ref.duration or limits.max_seconds)  # decoded whole: its buffer may be copied
        lease = await self._lease(ref, limits, decoded)
        try:
            data = await self._fetch(ref, limits)
            lease.resize(len(data) + decoded)
            return await self.encoder.embed_query(data)
        finally:
            lease.release()

    async def _visible(self, sample_id: int, request: Request) -> SampleRow:
        row = await self.store.get_sample(sample_id)
        if row is None or row.space not in self._spaces(request):
            raise NotFound(f"There is no sound #{sample_id} in this library.")
        return row

    async def _audio_file(self, row: SampleRow, request: Request, file_id: str | None) -> AudioFile:
        """A sample as something to send: its platform handle, or a ready preview within the upload limit."""
        preview = None
        if request.upload_limit > 0 and (file_id is None or request.fresh_upload):
            try:
                preview = await self.library.preview(row, PREVIEW_FORMAT, request.upload_limit)
            except UserError as exc:
                if isinstance(exc, Busy) and request.command is Command.PLAY:
                    raise  # asked to play it: say busy rather than send nothing
                log.info("no preview of #%d: %s", row.id, exc)
        return AudioFile(
            row.id,
            row.name,
            self.library.files.path(row.sha256, row.ext),
            row.duration,
            None if request.fresh_upload else file_id,
            preview,
            attachment_name(row.id, row.name, f".{PREVIEW_FORMAT}"),
        )

    async def _top_audio(self, hits: list[Hit], request: Request) -> AudioFile | None:
        if not hits:
            return None
        row = await self.store.get_sample(hits[0].sample_id)
        return None if row is None else await self._audio_file(row, request, hits[0].platform_file_id)

    def _remember(self, query: _Query) -> str:
        query_id = secrets.token_hex(4)
        self._queries[query_id] = query
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return query_id

    async def _page(self, query: _Query, query_id: str, request: Request, lexical: list[int] | None = None) -> Reply:
        page = max(0, request.page)
        hits, has_more = await self.searcher.search_vector(
            query.spaces, query.vector, query.text, query.k, page, request.platform, lexical, query.exclude
        )
        audio = await self._top_audio(hits, request) if page == 0 else None
        return replies.results(query.title, hits, query_id, page, query.k, has_more, audio)

    # ----------------------------------------------------------------- handlers

    async def _on_search(self, request: Request) -> Reply:
        text = " ".join(request.text.split())[:500]
        if not text:
            raise UserError("What should I look for? Try: /search thunder")
        spaces, k = self._spaces(request), self._k(request)
        vector, lexical = await self.searcher.embed_and_match(spaces, text, k, request.page)
        query = _Query(spaces, vector, text, k, f'Results for "{text[:100]}"')
        return await self._page(query, self._remember(query), request, lexical)

    async def _on_similar(self, request: Request) -> Reply:
        embedded = await self._query_audio(request)
        query = _Query(self._spaces(request), embedded.vector, "", self._k(request), "Similar sounds")
        return await self._page(query, self._remember(query), request)

    async def _on_more(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        row = await self._visible(sample_id, request)
        vector = (await self.store.sample_vectors([sample_id]))[sample_id]
        title = f"More like #{sample_id} {row.name}"
        query = _Query(self._spaces(request), vector, "", self._k(request), title, exclude=sample_id)
        return await self._page(query, self._remember(query), request)

    async def _on_page(self, request: Request) -> Reply:
        query_id = request.text.strip()
        query = self._queries.get(query_id)
        if query is None or not set(query.spaces) <= set(self._spaces(request)):  # a query id from another space
            raise UserError("That search has expired; please run it again.")
        return await self._page(query, query_id, request)

    async def _on_identify(self, request: Request) -> Reply:
        embedded = await self._query_audio(request)
        own = await self.store.space_labels(request.space)
        labels = await self.encoder.labels(embedded.vector, own, max(self.config.search.labels, request.k or 0))
        query = _Query(self._spaces(request), embedded.vector, "", self._k(request), "Similar sounds")
        query_id = self._remember(query)
        hits, has_more = await self.searcher.search_vector(query.spaces, query.vector, "", query.k, 0, request.platform)
        return replies.identify(labels, hits, query_id, has_more, await self._top_audio(hits, request))

    async def _on_add(self, request: Request) -> Reply:
        ref = self._one_audio(request, "add it")
        await self.ingest.check_quota(request.space)  # before downloading anything
        if not request.bulk:
            self.encoder.check_room()
        limits, decoded = self.encoder.add_limits, self.encoder.addition_bytes
        lease = await self._lease(ref, limits, decoded, wait=request.bulk)
        try:
            data = await self._fetch(ref, limits)
            lease.resize(len(data) + decoded)
            result = await self.ingest.add(
                request.space,
                data,
                ref.filename,
                uploader=request.user,
                description=request.text,
                source=ref.source,
                priority=Priority.BULK if request.bulk else Priority.ADD,
                platform=request.platform,
                platform_file_id=ref.platform_file_id,
                lease=lease,
            )
        finally:
            lease.release()
        return replies.added(result)

    async def _on_remove(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        row = await self.store.get_sample(sample_id)
        if row is None or row.space != request.space:
            raise NotFound(f"There is no sound #{sample_id} in this library.")
        if row.uploader != request.user and not request.is_admin:
            raise NotAllowed(f"Only the person who added #{sample_id} or an admin can remove it.")
        removed = await self.library.remove(request.space, sample_id)
        log.info("removed #%d from %s", sample_id, request.space)
        return Reply(ReplyKind.REMOVED, f"Removed #{sample_id} {removed.name}.", title=removed.name)

    async def _on_stats(self, request: Request) -> Reply:
        samples, seconds, uploaders = await self.store.stats(request.space)
        labels = len(await self.store.space_labels(request.space))
        return replies.stats(SpaceStats(request.space, samples, seconds, uploaders, labels), self.encoder.depth)

    async def _on_help(self, request: Request) -> Reply:
        return Reply(ReplyKind.HELP, replies.HELP)

    async def _on_play(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        row = await self._visible(sample_id, request)
        file_id = (await self.store.file_ids([sample_id], request.platform)).get(sample_id)
        audio = await self._audio_file(row, request, file_id)
        return Reply(ReplyKind.AUDIO, f"#{sample_id} {audio.title} ({audio.duration:.1f} s)", audio=audio)

    async def _on_remember(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        if not request.file_id:
            raise UserError("No file id to remember.")
        await self.library.remember_file_id(sample_id, request.platform, request.file_id)
        return replies.text(f"Remembered #{sample_id}.")

    async def _on_spaces(self, request: Request) -> Reply:
        if request.platform != OPERATOR:
            raise NotAllowed("Only the operator can list every library.")
        spaces = tuple(await self.store.spaces())
        return Reply(ReplyKind.TEXT, "\n".join(spaces) or "No libraries yet.", spaces=spaces)

    async def _on_labels(self, request: Request) -> Reply:
        action, _, label = request.text.strip().partition(" ")
        label = " ".join(label.split())[:100]
        if action == "add" and label:
            await self.library.add_label(request.space, label)
            return replies.text(f'Added the label "{label}" to this library.')
        if action == "remove" and label:
            if not request.is_admin:
                raise NotAllowed("Only an admin can remove labels.")
            if await self.library.remove_label(request.space, label):
                return replies.text(f'Removed the label "{label}".')
            raise NotFound(f'This library has no label "{label}".')
        if action:
            raise UserError("Use /labels, /labels add <label> or /labels remove <label>.")
        own = await self.store.space_labels(request.space)
        return replies.text("This library's labels: " + ", ".join(own) if own else "This library has no labels yet.")


def parse_id(text: str) -> int:
    """A sample id from user text such as '12' or '#12'."""
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise UserError("Please give a sample number, for example: /remove 12")
    return int(value)
