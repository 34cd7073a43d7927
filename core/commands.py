"""The command handlers behind the one door: rate limits, error mapping, paging memory, one handler per command."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from core import replies
from core.analyse import BATCH_SECONDS, CHUNK_SECONDS, Analyser
from core.audio import Audio, Limits, check_declared
from core.budget import Budget, Lease, decoded_bytes, download_bytes
from core.config import Config
from core.encoder import Embedded, Encoder
from core.errors import Busy, NotAllowed, NotFound, RateLimited, UserError
from core.files import attachment_name
from core.ingest import Ingest, print_bytes
from core.jobs import Priority
from core.library import Library
from core.messages import Added, AudioFile, AudioRef, Command, Hit, Reply, ReplyKind, Request, SpaceStats
from core.metrics import Metrics, NoMetrics
from core.ratelimit import LocalRateLimits, RateLimits, cost, timeline_cost
from core.search import Searcher
from core.store import SampleRow, SavedQuery, Store

log = logging.getLogger(__name__)

QUERY_CACHE = 512  # searches also kept in memory; every one is in the store
PREVIEW_FORMAT = "ogg"
OPERATOR = "cli"  # the command line is the operator's own: no rate limit, may list every library
MAX_TIMELINE_LABELS = 50  # labels a user may list for one timeline
TOO_LONG = "That took too long; please try again."


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
        analyser: Analyser,
        budget: Budget | None = None,
        metrics: Metrics | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.config = config
        self.budget = budget or Budget(config.limits.max_bytes_in_flight)
        self.metrics = metrics or NoMetrics()
        self.store = store
        self.library = library
        self.encoder = encoder
        self.searcher = searcher
        self.ingest = ingest
        self.analyser = analyser
        self.limits = limits or LocalRateLimits(
            config.limits.requests_per_minute, config.limits.library_requests_per_minute
        )
        self._queries: OrderedDict[str, SavedQuery] = OrderedDict()
        self._handlers: dict[Command, Callable[[Request], Awaitable[Reply]]] = {
            Command.SEARCH: self._on_search,
            Command.SIMILAR: self._on_similar,
            Command.IDENTIFY: self._on_identify,
            Command.ADD: self._on_add,
            Command.REMOVE: self._on_remove,
            Command.STATS: self._on_stats,
            Command.HELP: self._on_help,
            Command.START: self._on_start,
            Command.PAGE: self._on_page,
            Command.MORE: self._on_more,
            Command.PLAY: self._on_play,
            Command.LABELS: self._on_labels,
            Command.REMEMBER: self._on_remember,
            Command.SPACES: self._on_spaces,
            Command.TIMELINE: self._on_timeline,
            Command.MOVE: self._on_move,
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
        if request.command is Command.TIMELINE:  # waits behind chat requests, and grows with the recording
            seconds = self.config.timeline.deadline_seconds
        else:
            seconds = limits.bulk_request_seconds if request.bulk else limits.request_seconds
        deadline = asyncio.timeout(seconds)
        try:
            if request.platform != OPERATOR:
                await self._charge(request)
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

    async def _charge(self, request: Request) -> None:
        """Spend the request's cost from its user's and its library's budgets, or say when to try again."""
        full = await self.limits.charge(request.user, request.space, cost(request))
        if full is None:
            return
        which, wait = full
        if which == "user" and request.command is Command.TIMELINE:
            raise RateLimited(
                f"A timeline costs a request per minute of audio, and you've used your share for now; "
                f"try again in {_seconds(wait)}."
            )
        if which == "user":
            raise RateLimited(f"You're sending requests too quickly; try again in {_seconds(wait)}.")
        raise RateLimited(f"This library is very busy right now; try again in {_seconds(wait)}.")

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

    async def _query_audio(self, request: Request) -> tuple[Embedded, Audio]:
        """The query clip decoded, and embedded ahead of other work."""
        ref = self._one_audio(request, "search with")
        self.encoder.check_room()
        limits = self.encoder.query_limits
        decoded = 2 * decoded_bytes(ref.duration or limits.max_seconds)  # decoded whole: its buffer may be copied
        lease = await self._lease(ref, limits, decoded)
        try:
            data = await self._fetch(ref, limits)
            lease.resize(len(data) + decoded)
            with self.encoder.interactive():  # from here on the cores go to this request (not while downloading)
                audio = await self.encoder.decode(data, limits)
                return await self.encoder.embed_audio(audio, Priority.INTERACTIVE), audio
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

    async def _remember(self, query: SavedQuery) -> str:
        """Keep a search for paging, in the store (so its buttons outlive a restart) and in memory."""
        query_id = secrets.token_hex(6)
        await self.store.save_query(query_id, query)
        self._cache(query_id, query)
        return query_id

    def _cache(self, query_id: str, query: SavedQuery) -> None:
        self._queries[query_id] = query
        self._queries.move_to_end(query_id)
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)

    async def _recall(self, query_id: str) -> SavedQuery | None:
        query = self._queries.get(query_id)
        if query is None and query_id:
            query = await self.store.load_query(query_id)
            if query is not None:
                self._cache(query_id, query)
        return query

    async def _page(
        self, query: SavedQuery, query_id: str, request: Request, lexical: list[int] | None = None
    ) -> Reply:
        page = max(0, request.page)
        with self.encoder.interactive():
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
        with self.encoder.interactive():  # running bulk batches wait at a pause point meanwhile
            vector, lexical = await self.searcher.embed_and_match(spaces, text, k, request.page)
        query = SavedQuery(spaces, vector, text, k, f'Results for "{text[:100]}"')
        return await self._page(query, await self._remember(query), request, lexical)

    async def _on_similar(self, request: Request) -> Reply:
        embedded, _ = await self._query_audio(request)
        query = SavedQuery(self._spaces(request), embedded.vector, "", self._k(request), "Similar sounds")
        return await self._page(query, await self._remember(query), request)

    async def _on_more(self, request: Request) -> Reply:
        sample_id = parse_id(request.text)
        row = await self._visible(sample_id, request)
        vector = (await self.store.sample_vectors([sample_id]))[sample_id]
        title = f"More like #{sample_id} {row.name}"
        query = SavedQuery(self._spaces(request), vector, "", self._k(request), title, exclude=sample_id)
        return await self._page(query, await self._remember(query), request)

    async def _on_page(self, request: Request) -> Reply:
        query_id = request.text.strip()
        query = await self._recall(query_id)
        if query is None or not set(query.spaces) <= set(self._spaces(request)):  # a query id from another space
            raise UserError("That search has expired; please run it again.")
        return await self._page(query, query_id, request)

    async def _on_identify(self, request: Request) -> Reply:
        embedded, audio = await self._query_audio(request)
        spaces = self._spaces(request)
        with self.encoder.interactive():
            own = await self.store.space_labels(request.space)
            top = max(self.config.search.labels, request.k or 0)
            labels, exact = await asyncio.gather(
                self.encoder.labels(embedded.vector, own, top), self.searcher.exact(spaces, audio.samples)
            )
            query = SavedQuery(spaces, embedded.vector, "", self._k(request), "Similar sounds")
            query_id = await self._remember(query)
            hits, has_more = await self.searcher.search_vector(spaces, query.vector, "", query.k, 0, request.platform)
            playable = await self._top_audio(hits, request)
        return replies.identify(labels, hits, query_id, has_more, playable, exact)

    async def _on_add(self, request: Request) -> Reply:
        ref = self._one_audio(request, "add it")
        await self.ingest.check_quota(request.space)  # before downloading anything
        if not request.bulk:
            self.encoder.check_room()
        limits = self.encoder.add_limits
        # Whichever holds more: the windows being embedded, or, after them, the fingerprint's pass.
        decoded = max(self.encoder.addition_bytes, print_bytes(ref.duration or limits.max_seconds))
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
        if request.replay and result.duplicate:
            result = await self._first_answer(result, request)
        return replies.added(result, await self._added_audio(result, request, ref))

    async def _added_audio(self, result: Added, request: Request, ref: AudioRef) -> AudioFile | None:
        """The new sound as playable audio, to confirm it by ear (and get the platform a handle), when asked."""
        if request.upload_limit <= 0 or request.bulk:
            return None
        row = await self.store.get_sample(result.sample_id)
        if row is None:
            return None
        known = ref.platform_file_id or (await self.store.file_ids([row.id], request.platform)).get(row.id)
        return await self._audio_file(row, request, known)

    async def _first_answer(self, result: Added, request: Request) -> Added:
        """A replayed addition this user's first run already committed: answer as that run would have."""
        row = await self.store.get_sample(result.sample_id)
        if row is None or row.uploader != request.user:
            return result
        return Added(row.id, row.name, row.duration, row.tags)

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
        return replies.help_for(request.platform)

    async def _on_start(self, request: Request) -> Reply:
        return replies.welcome_for(request.platform)

    async def _on_move(self, request: Request) -> Reply:
        new = request.text.strip()
        prefix = f"{request.platform}:"
        if not request.is_admin or not (request.space.startswith(prefix) and new.startswith(prefix)):
            raise NotAllowed("Only the platform can move a library, and only within itself.")
        moved = await self.library.move_space(request.space, new)
        return replies.text(f"Moved {replies.count(moved, 'sound')} from {request.space} to {new}.")

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

    async def _on_timeline(self, request: Request) -> Reply:
        ref = self._one_audio(request, "make a timeline of")
        self.encoder.check_room()
        limits = self.analyser.limits
        decoded = decoded_bytes(2 * CHUNK_SECONDS + BATCH_SECONDS)  # streamed: a chunk, its copy, a batch of windows
        lease = await self._lease(ref, limits, decoded)
        try:
            data = await self._fetch(ref, limits)
            lease.resize(len(data) + decoded)
            labels = [" ".join(part.split()) for part in request.text.split(",") if part.strip()][:MAX_TIMELINE_LABELS]
            labels = labels or await self.store.space_labels(request.space) or await self.encoder.vocabulary()
            timeline = await self.analyser.timeline(data, labels, request.progress)
        finally:
            lease.release()
        if request.platform != OPERATOR:  # charged up front by the declared length (or size): settle to the real one
            delta = timeline_cost(timeline.duration) - cost(request)
            await self.limits.adjust(request.user, request.space, delta)
        return replies.timeline(timeline)

    async def _on_labels(self, request: Request) -> Reply:
        action, _, label = request.text.strip().partition(" ")
        label = " ".join(label.split())[:100]
        if action in ("add", "remove") and label and not request.is_admin:
            raise NotAllowed("Only an admin can change this library's labels.")
        if action == "add" and label:
            own = await self.store.space_labels(request.space)
            cap = self.config.limits.labels_per_library
            if label in own:
                return replies.text(f'This library already has the label "{label}".')
            if cap and len(own) >= cap:
                raise UserError(f"This library has {cap} labels, the most it may have; remove one first.")
            await self.library.add_label(request.space, label)
            return replies.text(f'Added the label "{label}" to this library.')
        if action == "remove" and label:
            if await self.library.remove_label(request.space, label):
                return replies.text(f'Removed the label "{label}".')
            raise NotFound(f'This library has no label "{label}".')
        if action:
            raise UserError("Use /labels, /labels add <label> or /labels remove <label>.")
        own = await self.store.space_labels(request.space)
        return replies.text("This library's labels: " + ", ".join(own) if own else "This library has no labels yet.")


def _seconds(wait: float) -> str:
    """A wait as people say it: "1 second", "12 seconds"."""
    return replies.count(max(1, math.ceil(wait)), "second")


def parse_id(text: str) -> int:
    """A sample id from user text such as '12' or '#12'."""
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise UserError("Please give a sample number, for example: /remove 12")
    return int(value)
