"""Rate limits shared by every frontend of a cluster: the same cost windows as core/ratelimit.py, kept in Redis.

One Lua script checks the user's and the library's windows and spends from both atomically, on Redis's clock, so
a user who spreads requests over several frontends gets the same budget as on one.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from core.ratelimit import TENTHS, WINDOW

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# KEYS: the user's and the library's windows (sorted sets of "id:weight" scored by time in ms).
# ARGV: weight, user budget, library budget, window ms, a unique member id, and "1" to spend without checking.
# Budgets <= 0 disable a window. Returns {which, wait_ms}: which is 0 when spent from both, else 1 (user) or
# 2 (library) with the wait.
CHARGE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local weight = tonumber(ARGV[1])
local window = tonumber(ARGV[4])
for i = 1, 2 do
  local budget = tonumber(ARGV[i + 1])
  if budget > 0 and weight > 0 and ARGV[6] ~= '1' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms - window)
    local spent = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    local total = 0
    for j = 1, #spent, 2 do
      total = total + tonumber(string.match(spent[j], ':(%d+)$'))
    end
    local over = total + weight - budget
    if over > 0 and #spent > 0 then
      for j = 1, #spent, 2 do
        over = over - tonumber(string.match(spent[j], ':(%d+)$'))
        if over <= 0 or j + 2 > #spent then
          return {i, math.max(0, tonumber(spent[j + 1]) + window - now_ms)}
        end
      end
    end
  end
end
for i = 1, 2 do
  if tonumber(ARGV[i + 1]) > 0 and weight > 0 then
    redis.call('ZADD', KEYS[i], now_ms, ARGV[5] .. ':' .. ARGV[1])
    redis.call('PEXPIRE', KEYS[i], window)
  end
end
return {0, 0}
"""

# KEYS: both windows. ARGV: tenths to give back, budgets. The latest spends shrink first, as in RateLimiter.adjust.
REFUND = """
for i = 1, 2 do
  if tonumber(ARGV[i + 1]) > 0 then
    local owed = tonumber(ARGV[1])
    while owed > 0 do
      local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
      if #last == 0 then break end
      local id, weight = string.match(last[1], '^(.*):(%d+)$')
      weight = tonumber(weight)
      redis.call('ZREM', KEYS[i], last[1])
      if weight > owed then
        redis.call('ZADD', KEYS[i], last[2], id .. ':' .. (weight - owed))
      end
      owed = owed - weight
    end
  end
end
return 0
"""


class RedisRateLimits:
    """Per-user and per-library cost windows in Redis, for frontends that share users and libraries."""

    def __init__(self, redis: Redis, per_user: int, per_library: int, prefix: str = "shira:") -> None:
        self.redis = redis
        self.budgets = (per_user * TENTHS, per_library * TENTHS)
        self.prefix = prefix
        self._charge = redis.register_script(CHARGE)
        self._refund = redis.register_script(REFUND)

    def _keys(self, user: str, space: str) -> list[str]:
        return [f"{self.prefix}rate:user:{user}", f"{self.prefix}rate:space:{space}"]

    def _args(self, weight: int, check: bool) -> list[int | str]:
        return [weight, *self.budgets, int(WINDOW * 1000), secrets.token_hex(8), "0" if check else "1"]

    async def charge(self, user: str, space: str, weight: int) -> tuple[str, float] | None:
        """Spend weight from both windows, or return which one is full ("user" or "library") and the wait in s."""
        which, wait_ms = await self._charge(keys=self._keys(user, space), args=self._args(weight, check=True))
        if int(which) == 0:
            return None
        return ("user" if int(which) == 1 else "library"), int(wait_ms) / 1000.0

    async def adjust(self, user: str, space: str, delta: int) -> None:
        """Settle an earlier charge in both windows: spend delta more, or give back -delta."""
        if delta > 0:
            await self._charge(keys=self._keys(user, space), args=self._args(delta, check=False))
        elif delta < 0:
            await self._refund(keys=self._keys(user, space), args=[-delta, *self.budgets])
