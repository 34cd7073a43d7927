"""Content-addressed storage of original files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import stat
import time
import unicodedata
from pathlib import Path

from core.errors import BadAudio
from core.messages import AudioRef

_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"  # names this machine's part files
PART_MAX_AGE = 3600.0  # seconds; another host's part file untouched this long is a dead writer's

# The one list of file name endings shira treats as sound (audio formats and the video containers it reads).
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .mp3 .ogg .oga .opus .m4a .aac .aif .aiff .aifc .wma .weba .webm .mka .mp4 .mov .mkv .caf "
    ".au .snd .w64 .wv .ape .amr .3gp .mp2 .ac3 .spx .voc".split()
)


def is_audio_name(filename: str) -> bool:
    """Whether a file name ends like a sound file."""
    return os.path.splitext(filename.strip().lower())[1] in AUDIO_SUFFIXES


def attachment_name(sample_id: int, name: str, suffix: str) -> str:
    """A file name for sending a sample: its number and display name (letters of any script kept), one suffix."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in AUDIO_SUFFIXES:
        stem = name
    stem = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", stem)).strip("._") or "sound"
    return f"{sample_id}-{stem[:60]}{suffix}"


def safe_ext(filename: str) -> str:
    """A short, safe extension taken from a user's file name ('.bin' if none)."""
    ext = os.path.splitext(filename.strip().lower())[1]
    return ext if _EXT.match(ext) else ".bin"


def display_name(filename: str, fallback: str = "sound") -> str:
    """A clean display name from a user-supplied file name: no path, no control characters, bounded length."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")
    return name[:120] or fallback


def local_ref(path: Path) -> AudioRef:
    """A local file as an attachment: its size is declared up front, and it is read only when needed,
    never past that size (a device such as /dev/zero, a pipe or a folder is refused, not read forever)."""
    try:
        info = path.stat()
        size: int | None = info.st_size if stat.S_ISREG(info.st_mode) else None
    except OSError:
        size = None

    def read() -> bytes:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise BadAudio(f"{path} is not a file I can read: it is not a regular file.")
            with path.open("rb") as fh:
                return fh.read((info.st_size if size is None else size) + 1)  # never past the declared size
        except FileNotFoundError as exc:
            raise BadAudio(f"{path} is not a file I can read: there is no such file.") from exc
        except OSError as exc:
            raise BadAudio(f"Can't read {path}: {exc.strerror or exc}.") from exc

    async def fetch() -> bytes:
        return await asyncio.to_thread(read)

    return AudioRef(filename=path.name, fetch=fetch, size=size, source=str(path))


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (a writer that is still running keeps its .part file)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileStore:
    """Originals stored once each, named by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sweep_parts()

    def sweep_parts(self) -> int:
        """Delete half-written files left by a writer that was killed mid-write; returns how many.

        The directory may be shared by several machines: a writer on this host is known dead when its pid is gone;
        one on another host, when its part file has not changed for PART_MAX_AGE.
        """
        removed = 0
        now = time.time()
        for part in self.root.glob("??/.*.part"):
            pid, _, host = part.name[: -len(".part")].rpartition(".")[2].partition("@")
            if not pid.isdigit():
                continue
            dead = False
            if host in ("", HOST):
                dead = not _alive(int(pid))
            else:
                with contextlib.suppress(FileNotFoundError):
                    dead = now - part.stat().st_mtime > PART_MAX_AGE
            if dead:
                part.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, sha256: str, ext: str) -> Path:
        """Where a file with this hash lives."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not _EXT.match(ext):
            raise ValueError("bad content address")
        return self.root / sha256[:2] / f"{sha256}{ext}"

    def find(self, sha256: str) -> Path | None:
        """The stored file with this hash, whatever extension it was stored under."""
        self.path(sha256, ".bin")  # validates the hash
        return next(iter(sorted((self.root / sha256[:2]).glob(f"{sha256}.*"))), None)

    def put(self, data: bytes, sha256: str, ext: str) -> Path:
        """Store bytes durably (write, fsync, rename); returns the path, which keeps the extension of any copy
        already stored: one file per hash, so removing the last sample that uses it leaves nothing behind."""
        path = self.path(sha256, ext)
        existing = path if path.exists() else self.find(sha256)
        if existing is not None:
            return existing
        path.parent.mkdir(parents=True, exist_ok=True)
        # unique per writer, so two concurrent puts of one file never share a half-written tmp;
        # pid@host comes last so sweep_parts can tell whether the writer is still alive
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}@{HOST}.part")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def delete(self, sha256: str) -> None:
        """Remove the file with this hash, whatever its extension, if present."""
        while (path := self.find(sha256)) is not None:
            path.unlink(missing_ok=True)

    def all(self) -> dict[str, Path]:
        """Every stored file by hash."""
        return {p.name[:64]: p for p in self.root.glob("??/*") if not p.name.startswith(".")}
