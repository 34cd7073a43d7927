"""Frozen values that cross the line between adapters and the core."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from core.timeline import Event


class Command(StrEnum):
    """What a request asks the core to do."""

    SEARCH = "search"  # text -> audio; text is the query
    SIMILAR = "similar"  # audio -> audio; audio[0] is the query
    IDENTIFY = "identify"  # "what sound is this?": labels plus similar sounds
    ADD = "add"  # audio[0] is added; text is the description
    REMOVE = "remove"  # text is the sample id
    STATS = "stats"
    HELP = "help"
    START = "start"
    PAGE = "page"  # text is a query id from an earlier reply; page is the page wanted
    MORE = "more"  # "more like this": text is a sample id
    PLAY = "play"  # text is a sample id; the reply carries it as audio
    LABELS = "labels"  # text "add X" / "remove X" / "" manages the space's own labels
    MOVE = "move"  # the space's library moves to the space key in text (a Telegram group became a supergroup)
    REMEMBER = "remember"  # text is a sample id; file_id is the platform's reusable handle for it
    SPACES = "spaces"  # the operator's list of every library (the CLI only)
    TIMELINE = "timeline"  # audio[0] is a long recording or a video; text may list labels ("dog, siren")


@dataclass(frozen=True)
class AudioRef:
    """An audio attachment that the core downloads only when it needs it."""

    filename: str
    fetch: Callable[[], Awaitable[bytes]]
    size: int | None = None  # as declared by the platform, checked before download
    duration: float | None = None  # as declared by the platform (voice notes), checked before download
    mime: str | None = None
    platform_file_id: str | None = None  # reusable handle, such as a Telegram file_id
    source: str = ""  # where it came from, kept with the sample (a bulk import's path)


@dataclass(frozen=True)
class Request:
    """One normalised inbound command from any platform."""

    platform: str  # "console", "telegram", "discord", "cli"
    space: str  # library key, e.g. "telegram:-100123", "discord:guild:42"
    user: str  # platform user id, e.g. "telegram:42"
    command: Command
    text: str = ""
    audio: tuple[AudioRef, ...] = ()
    user_name: str = ""
    is_admin: bool = False  # the adapter decides what counts as an admin on its platform
    k: int | None = None
    page: int = 0
    extra_spaces: tuple[str, ...] = ()  # searched as well, e.g. ("global",)
    upload_limit: int = 0  # bytes of playable audio the platform takes; 0: the reply needs no preview file
    fresh_upload: bool = False  # the platform refused its stored handle: prepare a preview anyway
    file_id: str = ""  # with Command.REMEMBER
    bulk: bool = False  # an addition that may wait behind interactive work (bulk import)
    progress: Callable[[float], Awaitable[None]] | None = None  # told the seconds analysed so far (timelines)
    replay: bool = False  # asked again after a restart: this user's exact copy already stored answers as added


class ReplyKind(StrEnum):
    """How an adapter should present a reply."""

    TEXT = "text"
    RESULTS = "results"
    IDENTIFY = "identify"
    ADDED = "added"
    REMOVED = "removed"
    STATS = "stats"
    HELP = "help"
    WELCOME = "welcome"  # the answer to /start (and a first meeting): what this is, one thing to try
    AUDIO = "audio"
    ERROR = "error"
    BUSY = "busy"
    TIMELINE = "timeline"


@dataclass(frozen=True)
class Hit:
    """One search result."""

    sample_id: int
    name: str
    score: float  # cosine similarity between the query and the sample
    start: float  # best-matching window, seconds
    end: float
    duration: float
    space: str
    tags: tuple[str, ...] = ()
    description: str = ""
    uploader: str = ""
    platform_file_id: str | None = None  # reusable handle on the requesting platform, when known


@dataclass(frozen=True)
class Label:
    """A zero-shot label with its probability."""

    label: str
    score: float


@dataclass(frozen=True)
class ExactMatch:
    """A library sample this very recording comes from (fingerprints line up), and where in it."""

    sample_id: int
    name: str
    offset: float  # seconds: where the query starts inside the sample (negative when it starts before it)
    confidence: float  # 0..1, calibrated so that sounds not in the library stay below the threshold


@dataclass(frozen=True)
class AudioFile:
    """A sample the adapter may send as playable audio."""

    sample_id: int
    title: str
    path: Path  # the original, content-addressed file
    duration: float
    platform_file_id: str | None = None  # for the requesting platform, when known
    preview: Path | None = None  # a ready OGG/Opus preview within the request's upload_limit
    filename: str = ""  # what to call the preview when sending it, e.g. "12-thunder.ogg"


@dataclass(frozen=True)
class Added:
    """The outcome of one addition."""

    sample_id: int
    name: str
    duration: float
    tags: tuple[str, ...] = ()
    duplicate: bool = False  # True: exact copy, nothing was stored; sample_id is the existing one
    near_duplicates: tuple[Hit, ...] = ()
    same_as: ExactMatch | None = None  # a re-recording of a sample already in the library


@dataclass(frozen=True)
class Timeline:
    """Which sounds occur when in a recording: events, a one-line summary, a chart and subtitles."""

    duration: float
    events: tuple[Event, ...]
    summary: str  # "mostly speech; dog barking at 3:10–3:25"
    png: bytes  # time on x, the top labels as rows, score as intensity
    srt: str
    vtt: str


@dataclass(frozen=True)
class SpaceStats:
    """Counts for one library."""

    space: str
    samples: int
    seconds: float
    uploaders: int
    labels: int


@dataclass(frozen=True)
class Reply:
    """What the core answers; each adapter renders it its own way."""

    kind: ReplyKind
    text: str  # a plain-text rendering, complete enough for the console
    title: str = ""  # the heading of results ('Results for "rain"'), or the removed sample's name
    hits: tuple[Hit, ...] = ()
    labels: tuple[Label, ...] = ()
    exact: ExactMatch | None = None  # "what sound is this?": the library sample it is, when fingerprints say so
    added: Added | None = None
    audio: AudioFile | None = None
    stats: SpaceStats | None = None
    query_id: str | None = None  # pass back with Command.PAGE to page through results
    page: int = 0
    offset: int = 0  # rank of hits[0] minus one (page * page size), for numbering
    has_more: bool = False
    error_id: str | None = None
    spaces: tuple[str, ...] = ()  # with Command.SPACES
    timeline: Timeline | None = None  # with Command.TIMELINE

    @property
    def is_error(self) -> bool:
        """True for replies that report a failure."""
        return self.kind in (ReplyKind.ERROR, ReplyKind.BUSY)


class Door(Protocol):
    """The one entry point of the core: adapters and the CLI send a request and get a reply, nothing else."""

    async def handle(self, request: Request) -> Reply:
        """Answer one request."""
        ...


@dataclass(frozen=True)
class Entry:
    """One request an adapter took on, as its inbox kept it."""

    platform: str
    key: str  # unique per platform event: a Telegram update_id, a Discord interaction or message id
    received_at: float  # time.time() when it was journaled
    payload: Mapping[str, Any]  # JSON the adapter wrote, enough to rebuild the request and answer it
    attempts: int  # how many runs have started on it, this one included


class Inbox(Protocol):
    """The adapters' durable journal: a request is recorded before the platform hears it was taken on, and marked
    done once its answer is delivered; what a run leaves pending, the next run answers."""

    async def record(self, platform: str, items: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Journal these requests (key -> payload) in one commit; returns the keys that were new."""
        ...

    async def done(self, platform: str, key: str) -> None:
        """Mark one request answered."""
        ...

    async def pending(self, platform: str) -> list[Entry]:
        """What earlier runs took on and never answered, oldest first; each call counts one more attempt.

        Called once per platform at start-up, before the adapter takes anything on: all it returns is old.
        """
        ...
