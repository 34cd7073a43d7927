"""Small JSON files of things measured or learnt once, kept in the data directory's cache so restarts skip them."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class CacheFile:
    """A JSON object of key -> value; a missing or unreadable file only means "not known yet"."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Any:
        """The value stored for key, or None."""
        return self._read().get(key)

    def number(self, key: str) -> float | None:
        """The number stored for key, or None (also when something else is stored there)."""
        value = self.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def put(self, key: str, value: Any) -> None:
        """Remember key's value (atomically: a kill leaves the old file or the new one)."""
        if self.path is None:
            return
        data = self._read()
        data[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}-", suffix=".tmp")
        except OSError as exc:  # a read-only data dir costs a re-check at the next start, nothing more
            log.warning("could not write %s: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)
            Path(tmp).unlink(missing_ok=True)
