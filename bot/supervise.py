"""Supervision of a running shira: each part's health check, revived with backoff, fatal when down too long."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.metrics import Check

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
REVIVE_SECONDS = 30.0  # one revive attempt may take this long


class PartDown(RuntimeError):
    """A part has been down longer than down_seconds: shira should exit so its service manager restarts it."""


@dataclass
class _Part:
    name: str
    check: Check
    revive: Callable[[], Awaitable[None]] | None
    down_since: float | None = None
    next_revive: float = 0.0
    backoff: float = FIRST_BACKOFF


class Supervisor:
    """Watches the parts of a running shira (adapters, the model worker): a part whose check reports a problem is
    revived with exponential backoff; one still down after down_seconds raises PartDown from run()."""

    def __init__(
        self, down_seconds: float, every: float = CHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.down_seconds = down_seconds
        self.every = every
        self.clock = clock
        self._parts: dict[str, _Part] = {}

    def watch(self, name: str, check: Check, revive: Callable[[], Awaitable[None]] | None = None) -> None:
        """Watch one part: check() is None when healthy, else why not; revive() restarts what has stopped."""
        self._parts[name] = _Part(name, check, revive)

    def problems(self) -> dict[str, str]:
        """Every part's current problem, by part (empty when all are healthy)."""
        found = {}
        for part in self._parts.values():
            problem = _ask(part)
            if problem is not None:
                found[part.name] = problem
        return found

    async def run(self) -> None:
        """Check every part every `every` seconds until one has been down too long; then raise PartDown."""
        while True:
            await asyncio.sleep(self.every)
            await self.check()

    async def check(self) -> None:
        """One round: note who is down, revive what is due, raise PartDown for a part down past the limit."""
        for part in list(self._parts.values()):
            problem = _ask(part)
            now = self.clock()
            if problem is None:
                if part.down_since is not None:
                    log.info("%s is back after %.0f s", part.name, now - part.down_since)
                part.down_since, part.next_revive, part.backoff = None, 0.0, FIRST_BACKOFF
                continue
            if part.down_since is None:
                part.down_since = now
                log.warning("%s: %s", part.name, problem)
            if now - part.down_since >= self.down_seconds:
                raise PartDown(f"{part.name} has been down for {now - part.down_since:.0f} s: {problem}")
            if part.revive is not None and now >= part.next_revive:
                part.next_revive, part.backoff = now + part.backoff, min(2 * part.backoff, MAX_BACKOFF)
                try:
                    await asyncio.wait_for(part.revive(), REVIVE_SECONDS)
                except Exception as exc:
                    log.warning("reviving %s failed: %s: %s", part.name, type(exc).__name__, exc)


def _ask(part: _Part) -> str | None:
    """A part's check; a check that fails is a problem too."""
    try:
        return part.check()
    except Exception as exc:
        return f"its health check failed: {type(exc).__name__}: {exc}"


async def until_stopped(stop: asyncio.Event, supervisor: Supervisor) -> int:
    """Wait for stop or for a part to stay down; 0 for a requested stop, 1 when a part is down for good."""
    watching = asyncio.create_task(supervisor.run(), name="supervisor")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watching, stopping):
            task.cancel()
        await asyncio.gather(watching, stopping, return_exceptions=True)
    if stopping.cancelled() and not watching.cancelled() and (error := watching.exception()) is not None:
        log.critical("%s; exiting so that the service manager restarts shira", error)
        return 1
    return 0
