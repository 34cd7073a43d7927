"""The chat side of timelines, shared by the adapters: one progress message edited at most every few seconds,
and the names of the files sent back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

CLOSE_SECONDS = 10.0  # how long the answer waits for a progress edit still on its way
Show = Callable[[str], Awaitable[None]]  # edits the progress message to this text


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(done: float, total: float | None = None) -> str:
    """ "Analysing… 3:20 of 40:00", or "… 3:20 so far" when the platform did not say how long it is."""
    if total and total >= done:
        return f"Analysing… {clock(done)} of {clock(total)}"
    return f"Analysing… {clock(done)} so far"


def output_name(filename: str, suffix: str) -> str:
    """What to call a file made from an upload: its stem (letters of any script kept) with a new suffix."""
    stem = os.path.splitext(filename.replace("\\", "/").rsplit("/", 1)[-1])[0]
    stem = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", stem)).strip("._")[:60] or "timeline"
    return f"{stem}{suffix}"


class Progress:
    """The core's progress callback for one timeline: the first report is shown at once, later ones at most every
    `interval` seconds, each edit in the background so the analysis never waits on the platform; while one edit is
    on its way, newer reports replace each other and the last one goes next."""

    def __init__(
        self,
        show: Show,
        interval: float,
        total: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.show = show
        self.interval = interval
        self.total = total
        self.clock = clock
        self.shown: list[str] = []  # what was edited in, in order
        self._last: float | None = None  # when the last edit started
        self._waiting: str | None = None  # a report held back by the interval or by an edit in flight
        self._edit: asyncio.Task[None] | None = None
        self._closed = False

    async def __call__(self, seconds: float) -> None:
        """Told the seconds analysed so far."""
        if self._closed:
            return
        self._waiting = progress_text(seconds, self.total)
        self._maybe_edit()

    def _maybe_edit(self) -> None:
        if self._waiting is None or (self._edit is not None and not self._edit.done()):
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return
        text, self._waiting, self._last = self._waiting, None, now
        self._edit = asyncio.create_task(self._run(text), name="timeline-progress")

    async def _run(self, text: str) -> None:
        try:
            await self.show(text)
            self.shown.append(text)
        except Exception as exc:  # a progress edit is a courtesy: the answer still comes
            log.info("could not show timeline progress: %r", exc)

    async def close(self) -> None:
        """Stop reporting; let an edit on its way land first (so the answer is never overwritten), then drop it."""
        self._closed = True
        edit = self._edit
        if edit is None or edit.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(edit), CLOSE_SECONDS)
        except TimeoutError:
            edit.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await edit
