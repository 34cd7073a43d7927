"""Rate limits by cost: model work weighs a unit, paging, playing and looking things up a tenth, help nothing;
a timeline a unit per minute of audio."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Protocol

from core.messages import Command, Request

WINDOW = 60.0  # seconds
TENTHS = 10  # costs are counted in tenths of a request, so sums stay exact

# What each command costs, in tenths of a unit; requests_per_minute is in units.
COSTS: Mapping[Command, int] = {
    Command.SEARCH: 10,  # a text embedding
    Command.SIMILAR: 10,  # decoding and embedding a short clip
    Command.IDENTIFY: 10,
    Command.ADD: 10,  # plus a unit per further minute of declared audio
    Command.MORE: 2,  # a stored vector: no model
    Command.REMOVE: 2,
    Command.PAGE: 1,
    Command.PLAY: 1,
    Command.STATS: 1,
    Command.LABELS: 1,
    Command.HELP: 0,
    Command.START: 0,
    Command.REMEMBER: 0,
    Command.MOVE: 0,
    Command.SPACES: 0,
    Command.TIMELINE: 10,  # a unit per started minute of audio: declared, else guessed from the size, then settled
}
MAX_ADD_COST = 10 * TENTHS
# With no declared duration, a timeline is charged as if its file held this many bytes a minute (about 140 kbit/s,
# compressed audio or a small video); once decoded, the charge is settled to the real length (commands.py).
TIMELINE_BYTES_PER_MINUTE = 1024 * 1024


def cost(request: Request) -> int:
    """A request's weight in tenths of a unit."""
    base = COSTS.get(request.command, TENTHS)
    if request.command is Command.PLAY and request.fresh_upload:
        return 0  # the adapter finishing a reply that was already paid for
    if request.command is Command.ADD and request.audio and request.audio[0].duration:
        extra = math.ceil(request.audio[0].duration / 60.0) - 1
        return min(MAX_ADD_COST, base + max(0, extra) * TENTHS)
    if request.command is Command.TIMELINE and request.audio:
        ref = request.audio[0]
        if ref.duration is not None:
            return timeline_cost(ref.duration)
        if ref.size is not None:
            return timeline_cost(60.0 * ref.size / TIMELINE_BYTES_PER_MINUTE)
    return base


def timeline_cost(seconds: float) -> int:
    """What a timeline of this many seconds of audio weighs: a unit per started minute."""
    return max(1, math.ceil(seconds / 60.0 - 1e-9)) * TENTHS


class RateLimiter:
    """At most `per_minute` units of cost per key in any 60 s window; 0 disables it."""

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.budget = per_minute * TENTHS
        self.max_keys = max_keys
        self._spent: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()

    def _window(self, key: str, now: float) -> deque[tuple[float, int]]:
        spent = self._spent.pop(key, None) or deque()
        while spent and now - spent[0][0] >= WINDOW:
            spent.popleft()
        self._spent[key] = spent
        if len(self._spent) > self.max_keys:
            self._spent.popitem(last=False)
        return spent

    def wait(self, key: str, weight: int, now: float | None = None) -> float:
        """Seconds until a request of this weight fits (0.0: it fits now); records nothing."""
        if self.budget <= 0 or weight <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        spent = self._window(key, now)
        over = sum(w for _, w in spent) + weight - self.budget
        if over <= 0 or not spent:
            return 0.0  # a single request heavier than the whole budget still goes through on its own
        for at, w in spent:
            over -= w
            if over <= 0:
                return max(0.0, at + WINDOW - now)
        return max(0.0, spent[-1][0] + WINDOW - now)

    def spend(self, key: str, weight: int, now: float | None = None) -> None:
        """Record a request of this weight."""
        if self.budget <= 0 or weight <= 0:
            return
        now = time.monotonic() if now is None else now
        self._window(key, now).append((now, weight))

    def adjust(self, key: str, delta: int, now: float | None = None) -> None:
        """Settle an earlier charge: spend delta more, or give back -delta from the latest spends."""
        if delta >= 0:
            self.spend(key, delta, now)
            return
        if self.budget <= 0:
            return
        spent = self._window(key, time.monotonic() if now is None else now)
        owed = -delta
        while owed > 0 and spent:
            at, weight = spent.pop()
            if weight > owed:
                spent.append((at, weight - owed))
            owed -= weight

    def allow(self, key: str, weight: int = TENTHS, now: float | None = None) -> bool:
        """Record the request if it fits; False if the key is over its budget."""
        now = time.monotonic() if now is None else now
        if self.wait(key, weight, now) > 0:
            return False
        self.spend(key, weight, now)
        return True


class RateLimits(Protocol):
    """The per-user and per-library windows a request is charged to: in this process, or shared (Redis)."""

    async def charge(self, user: str, space: str, weight: int) -> tuple[str, float] | None:
        """Spend weight from both windows, or return which one is full ("user" or "library") and the wait in s."""
        ...

    async def adjust(self, user: str, space: str, delta: int) -> None:
        """Settle an earlier charge in both windows: spend delta more, or give back -delta."""
        ...


class LocalRateLimits:
    """Both windows in this process's memory: the embedded default."""

    def __init__(self, per_user: int, per_library: int) -> None:
        self.user = RateLimiter(per_user)
        self.library = RateLimiter(per_library)

    async def charge(self, user: str, space: str, weight: int) -> tuple[str, float] | None:
        """Spend weight from both windows, or return which one is full ("user" or "library") and the wait in s."""
        for which, limiter, key in (("user", self.user, user), ("library", self.library, space)):
            wait = limiter.wait(key, weight)
            if wait > 0:
                return which, wait
        self.user.spend(user, weight)
        self.library.spend(space, weight)
        return None

    async def adjust(self, user: str, space: str, delta: int) -> None:
        """Settle an earlier charge in both windows: spend delta more, or give back -delta."""
        self.user.adjust(user, delta)
        self.library.adjust(space, delta)
