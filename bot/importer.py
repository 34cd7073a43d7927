"""Bulk import through the door: walk folders, send each file as a bulk addition, report failures."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.files import is_audio_name, local_ref
from core.messages import Command, Door, ReplyKind, Request

log = logging.getLogger(__name__)

IMPORTER = "import"  # the uploader recorded for bulk-imported samples
CONCURRENCY = 4  # files in flight: decoding overlaps with the model, and windows batch together


@dataclass
class ImportReport:
    """What a bulk import did."""

    added: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The CLI's --json shape."""
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
        }

    def summary(self) -> str:
        """A human summary."""
        lines = [f"Added {self.added}, skipped {self.duplicates} already in the library, {len(self.failed)} failed."]
        lines += [f"  failed: {p}: {e}" for p, e in self.failed]
        return "\n".join(lines)


def walk(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, plus audio files found recursively in folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and is_audio_name(child.name):
                    yield child
        else:
            yield path


async def import_paths(
    door: Door, paths: Iterable[Path], space: str, description: str = "", progress: bool = False
) -> ImportReport:
    """Import every file under paths into space; safe to interrupt and re-run (stored files are skipped)."""
    files = list(walk(paths))
    report = ImportReport()
    bar = _progress_bar(len(files)) if progress else None
    pending = iter(files)

    async def worker() -> None:
        for path in pending:
            request = Request(
                "cli", space, IMPORTER, Command.ADD, text=description, audio=(local_ref(path),), bulk=True
            )
            reply = await door.handle(request)
            if reply.kind is ReplyKind.ADDED and reply.added is not None:
                if reply.added.duplicate:
                    report.duplicates += 1
                else:
                    report.added += 1
            else:
                report.failed.append((str(path), reply.text))
                log.info("skipped %s: %s", path, reply.text)
            if bar is not None:
                bar.update(1)

    try:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(min(CONCURRENCY, max(1, len(files)))):
                tasks.create_task(worker())
    finally:
        if bar is not None:
            bar.close()
    return report


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, disable=not sys.stderr.isatty())
