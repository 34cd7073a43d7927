"""The memory budget: bytes of downloaded and decoded audio in flight, admitted up front and corrected as known."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.audio import SAMPLE_RATE
from core.errors import Busy

log = logging.getLogger(__name__)

DECODED_BYTES_PER_SECOND = SAMPLE_RATE * 4  # 48 kHz mono float32: 192 kB a second
BUSY = "I'm busy with other sounds right now; please try again in a moment."


def download_bytes(size: int) -> int:
    """What holding a downloaded file costs at its peak: the file, and the copy a download makes on the way."""
    return 2 * size


def decoded_bytes(seconds: float) -> int:
    """Decoded audio of this length, at the sample rate the model takes."""
    return int(seconds * DECODED_BYTES_PER_SECOND)


class Lease:
    """Bytes held in a Budget by one request; resize it as the real sizes become known, release it at the end."""

    def __init__(self, budget: Budget, size: int) -> None:
        self._budget = budget
        self.size = size

    def resize(self, size: int) -> None:
        """Hold this many bytes from now on: less frees room at once; more is taken even past the budget (the
        estimate was an upper bound from declared sizes, so this only happens when a platform under-declared)."""
        self._budget._change(self, max(0, size))

    def release(self) -> None:
        """Hold nothing (idempotent)."""
        self.resize(0)


class Budget:
    """An async byte semaphore: try_lease refuses at once when full (chat requests); lease waits its turn (bulk).

    A request larger than the whole budget is admitted when nothing else is in flight, so it can always run alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.capacity

    def try_lease(self, size: int) -> Lease:
        """Take size bytes now, or raise Busy."""
        if not self._fits(size):
            log.debug("budget full: %d of %d bytes in flight, %d more refused", self.used, self.capacity, size)
            raise Busy(BUSY)
        return self._take(size)

    async def lease(self, size: int) -> Lease:
        """Take size bytes, waiting (first come, first served) until they fit."""
        if not self._waiters and self._fits(size):
            return self._take(size)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled():  # admitted just as the waiter gave up: hand it on
                self.used -= size
                self._wake()
            raise
        return Lease(self, size)

    @asynccontextmanager
    async def hold(self, size: int, wait: bool = False) -> AsyncIterator[Lease]:
        """A lease of size bytes for the body (waiting for room with wait, else Busy), released after it."""
        lease = await self.lease(size) if wait else self.try_lease(size)
        try:
            yield lease
        finally:
            lease.release()

    def _take(self, size: int) -> Lease:
        self.used += size
        self.peak = max(self.peak, self.used)
        return Lease(self, size)

    def _change(self, lease: Lease, size: int) -> None:
        self.used += size - lease.size
        lease.size = size
        self.peak = max(self.peak, self.used)
        self._wake()

    def _wake(self) -> None:
        """Admit waiters in order while the first one fits."""
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if not self._fits(size):
                return
            self._waiters.popleft()
            self.used += size
            self.peak = max(self.peak, self.used)
            future.set_result(None)
