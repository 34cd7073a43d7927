"""A per-user sliding-window rate limit."""

from __future__ import annotations

import time
from collections import OrderedDict, deque


class RateLimiter:
    """At most `per_minute` requests per user in any 60 s window; 0 disables it."""

    def __init__(self, per_minute: int, max_users: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_users = max_users
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, user: str, now: float | None = None) -> bool:
        """Record a request; False if the user is over the limit."""
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        times = self._seen.pop(user, None) or deque()
        while times and now - times[0] >= 60.0:
            times.popleft()
        self._seen[user] = times
        if len(self._seen) > self.max_users:
            self._seen.popitem(last=False)
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        return True

    def retry_after(self, user: str, now: float | None = None) -> float:
        """Seconds until this user may send again."""
        now = time.monotonic() if now is None else now
        times = self._seen.get(user)
        if not times or len(times) < self.per_minute:
            return 0.0
        return max(0.0, 60.0 - (now - times[0]))
