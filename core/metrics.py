"""What the core reports about itself: counts, timings, levels and health checks; bot/health.py serves them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Check = Callable[[], "str | None"]  # None when healthy, else why not, in a few words

# Levels the core (or another part of shira) reports by a function read when metrics are collected.
GAUGES = {
    "queue_depth": "Jobs waiting for or running on the model",
    "bytes_in_flight": "Bytes of downloaded and decoded audio held by requests",
    "inbox_backlog": "Inbound chat events received but not yet answered",
}


class Metrics(Protocol):
    """Where the core records what it does; the default records nothing."""

    def request(self, command: str, outcome: str, seconds: float) -> None:
        """One request answered: its command, outcome (ok, busy, rate_limited, refused, error, timeout), duration."""

    def job(self, priority: str, waited: float, seconds: float) -> None:
        """One model job finished: seconds it waited before the model took it up, and seconds in the queue in all."""

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Report one of GAUGES by a function read when metrics are collected (called on the event loop)."""

    def check(self, name: str, check: Check) -> None:
        """A health check of one part (called on the event loop)."""


class NoMetrics:
    """Records nothing: the CLI and tests that don't look."""

    def request(self, command: str, outcome: str, seconds: float) -> None:
        """Ignored."""

    def job(self, priority: str, waited: float, seconds: float) -> None:
        """Ignored."""

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Ignored."""

    def check(self, name: str, check: Check) -> None:
        """Ignored."""
