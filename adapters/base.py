"""The small protocol every adapter implements."""

from __future__ import annotations

from typing import Protocol

from core.messages import Reply


class Adapter(Protocol):
    """Starts and stops inside the core's lifespan and can send a reply to a space."""

    name: str

    async def start(self) -> None:
        """Connect, answer what the inbox holds from an earlier run, and begin handling events; returns once running."""

    async def drain(self, seconds: float) -> None:
        """Take no new requests and give those in flight this long to be answered; the rest stay in the inbox."""

    async def stop(self) -> None:
        """Stop handling events and release connections."""

    async def send(self, space: str, reply: Reply) -> None:
        """Deliver a reply to a space unprompted (for example, when a bulk job finishes)."""

    def problem(self) -> str | None:
        """Why the adapter isn't receiving events right now (its connection or its background task), or None."""

    async def revive(self) -> None:
        """Restart background work that has stopped; a no-op while the platform library is still retrying itself.
        The supervisor (bot/supervise.py) calls it, with backoff, while problem() is not None."""
