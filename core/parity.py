"""Measured parity of a fast path to fp32, remembered per checkpoint, library version and CPU: restarts skip it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class ParityCache:
    """A small JSON file of key -> worst cosine to fp32; a missing or unreadable file only means "not measured"."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _read(self) -> dict[str, float]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        """The cosine measured for key, or None."""
        return self._read().get(key)

    def put(self, key: str, cosine: float) -> None:
        """Remember key's cosine (atomically: a kill leaves the old file or the new one)."""
        if self.path is None:
            return
        data = self._read()
        data[key] = cosine
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".parity-", suffix=".tmp")
        except OSError as exc:  # a read-only data dir costs a re-check at the next start, nothing more
            log.warning("could not remember a parity check in %s: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not remember a parity check in %s: %s", self.path, exc)
            Path(tmp).unlink(missing_ok=True)
