"""The console adapter: every command, locally, without a token; the reference adapter."""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from core.command_table import Platform, commands, entries
from core.config import ConsoleConfig
from core.files import local_ref
from core.messages import Command, Door, Reply, ReplyKind, Request
from core.phrases import after_question

log = logging.getLogger(__name__)

PLATFORM = "console"
_COMMANDS = commands(Platform.CONSOLE)  # every name the help lists, from the one command table
_WITH_FILE = {  # the commands whose first argument is a path
    name
    for e in entries(Platform.CONSOLE)
    if e.usage[Platform.CONSOLE].startswith("PATH")
    for name in (e.name, *e.aliases)
}


def parse_line(
    line: str, config: ConsoleConfig, last_query: str | None = None, next_page: int = 1
) -> Request | str | None:
    """Turn one console line into a Request, a message to print, or None to ignore it."""
    text = line.strip()
    if not text:
        return None
    base: dict[str, Any] = {
        "platform": PLATFORM,
        "space": config.space,
        "user": config.user,
        "user_name": config.user,
        "is_admin": True,
    }
    rest = after_question(text)
    if rest is not None:
        if not rest:
            return "Usage: what sound is this PATH"
        return Request(command=Command.IDENTIFY, audio=(local_ref(Path(_unquote(rest)).expanduser()),), **base)
    if not text.startswith("/"):
        return Request(command=Command.SEARCH, text=text, **base)
    name, _, args = text[1:].partition(" ")
    name = name.lower()
    command = _COMMANDS.get(name)
    if command is None:
        return f"Unknown command /{name}. Type /help for the list."
    if command is Command.PAGE:
        if last_query is None:
            return "Nothing to page through yet."
        return Request(command=Command.PAGE, text=last_query, page=next_page, **base)
    if name in _WITH_FILE:
        try:
            parts = shlex.split(args)
        except ValueError as exc:
            return f"Couldn't read that line: {exc}"
        if not parts:
            return f"Usage: /{name} PATH" + (" [description]" if command is Command.ADD else "")
        ref = local_ref(Path(parts[0]).expanduser())
        return Request(command=command, text=" ".join(parts[1:]), audio=(ref,), **base)
    return Request(command=command, text=args.strip(), **base)


def _unquote(value: str) -> str:
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value


def render(reply: Reply) -> str:
    """The console shows the plain-text rendering, plus where the top match lives."""
    out = reply.text
    if reply.audio is not None and reply.kind == ReplyKind.AUDIO:
        out += f"\nfile: {reply.audio.path}"
    return out


class ConsoleAdapter:
    """Reads commands from a text stream and prints replies."""

    name = PLATFORM

    def __init__(
        self,
        door: Door,
        config: ConsoleConfig,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        prompt: bool | None = None,
    ) -> None:
        self.door = door
        self.config = config
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.prompt = self.stdin.isatty() if prompt is None else prompt
        self._task: asyncio.Task[None] | None = None
        self._last_query: str | None = None
        self._page = 0

    async def start(self) -> None:
        """Begin reading lines in the background."""
        self._write(f"shira console: library '{self.config.space}'. Type /help for commands, /quit to leave.")
        self._task = asyncio.create_task(self.run(), name="console")

    async def wait(self) -> None:
        """Return when the input ends or the user quits."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def send(self, space: str, reply: Reply) -> None:
        """Print a reply."""
        self._write(render(reply))

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    async def run(self, readline: Callable[[], Awaitable[str]] | None = None) -> None:
        """The read-answer loop."""
        read = readline or (lambda: asyncio.to_thread(self.stdin.readline))
        while True:
            if self.prompt:
                self.stdout.write("shira> ")
                self.stdout.flush()
            line = await read()
            if not line or line.strip() in ("/quit", "/exit"):
                return
            await self.answer(line)

    async def answer(self, line: str) -> Reply | None:
        """Answer one line; returns the reply (None when only a message was printed)."""
        parsed = parse_line(line, self.config, self._last_query, self._page + 1)
        if parsed is None:
            return None
        if isinstance(parsed, str):
            self._write(parsed)
            return None
        reply = await self.door.handle(parsed)
        if parsed.command == Command.PAGE and not reply.is_error:
            self._page = parsed.page
        elif reply.query_id:
            self._last_query, self._page = reply.query_id, 0
        self._write(render(reply))
        return reply
