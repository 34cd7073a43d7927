"""Bulk import: walk folders, skip what is stored, decode while the model works, report failures."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.audio import read_limited
from core.engine import Engine
from core.errors import UserError
from core.jobs import Priority

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .aac .aif .aiff .aifc .wma .webm .mka .mp4 .mov .mkv .caf .au "
    ".snd .w64 .wv .ape .amr .3gp .mp2 .ac3 .spx .voc".split()
)
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
                if child.is_file() and not hidden and child.suffix.lower() in AUDIO_SUFFIXES:
                    yield child
        else:
            yield path


async def import_paths(
    engine: Engine, paths: Iterable[Path], space: str, description: str = "", progress: bool = False
) -> ImportReport:
    """Import every file under paths into space; safe to interrupt and re-run."""
    files = list(walk(paths))
    report = ImportReport()
    bar = _progress_bar(len(files)) if progress else None
    pending = iter(files)

    async def worker() -> None:
        for path in pending:
            try:
                data = await asyncio.to_thread(read_limited, path, engine.add_limits)
                result = await engine.add(
                    space,
                    data,
                    path.name,
                    uploader="import",
                    description=description,
                    source=str(path),
                    priority=Priority.BULK,
                )
                if result.duplicate:
                    report.duplicates += 1
                else:
                    report.added += 1
            except UserError as exc:
                report.failed.append((str(path), str(exc)))
                log.info("skipped %s: %s", path, exc)
            if bar is not None:
                bar.update(1)

    try:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(min(CONCURRENCY, max(1, len(files)))):
                tasks.create_task(worker())
    finally:
        if bar is not None:
            bar.close()
        await engine.flush()
    return report


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, disable=not sys.stderr.isatty())
