"""Playable previews of samples, made once per (file, format, size budget) and kept under a byte cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

IN_FLIGHT_SECONDS = 10.0  # a preview used this recently may still be on its way to a platform: not evicted
_NAME = re.compile(r"^(?P<sha>[0-9a-f]{64})-(?P<budget>\d+)\.(?P<fmt>[a-z0-9]{1,5})$")


class Previews:
    """Encoded previews on disk: single-flight per key, written atomically, evicted least recently used first."""

    def __init__(self, directory: Path, max_bytes: int, in_flight_seconds: float = IN_FLIGHT_SECONDS) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.in_flight_seconds = in_flight_seconds
        self._making: dict[Path, asyncio.Future[Path]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, fmt: str, budget: int) -> Path:
        """Where the preview of one file in one format and size budget lives."""
        return self.directory / f"{sha256}-{budget}.{fmt}"

    async def get(self, sha256: str, fmt: str, budget: int, make: Callable[[Path], Awaitable[Path]]) -> Path:
        """The preview, made by make(path) if it isn't on disk; concurrent callers share one encode."""
        path = self.path(sha256, fmt, budget)
        if path.exists():
            _touch(path)
            return path
        pending = self._making.get(path)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._making[path] = future
        try:
            made = await make(path)
            future.set_result(made)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a future nobody else awaited doesn't warn
            raise
        finally:
            del self._making[path]
        await asyncio.to_thread(self.evict)
        return made

    def delete(self, shas: Iterable[str]) -> int:
        """Remove every preview of these files; returns how many were removed."""
        removed = 0
        for sha in shas:
            for path in self.directory.glob(f"{sha}-*"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def referenced(self) -> set[str]:
        """The file hashes that have previews on disk."""
        return {m["sha"] for p in self.directory.iterdir() if (m := _NAME.match(p.name))}

    def size(self) -> int:
        """Bytes the previews take."""
        return sum(p.stat().st_size for p in self._files())

    def evict(self) -> int:
        """Delete least recently used previews until the total fits the cap; returns how many were deleted."""
        files = []
        for path in self._files():
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            files.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = 0
        now = time.time()
        for used, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if now - used < self.in_flight_seconds:
                break  # the rest were used just now: the cap waits until they have been sent
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            log.info("evicted %d preview(s); %d bytes remain", removed, total)
        return removed

    def _files(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if _NAME.match(p.name)]


def _touch(path: Path) -> None:
    """Mark a preview as just used (its mtime orders eviction)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)
