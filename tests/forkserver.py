"""A fork server for kill tests: import torch and shira once, then start each `shira` run in a fraction of a second.

`python -m tests.forkserver` imports the heavy modules, prints "ready", then reads one JSON command per line:
{"argv": [...], "stdin": path|null, "stdout": path, "stderr": path, "env": {...}} runs `bot.cli.main(argv)` in a
forked child with those environment variables added,
{"call": "module:function", "args": [...], ...} runs that function instead. It answers {"pid": n} for each start
and {"exit": pid, "code": n, "maxrss_kb": n} when a child ends (code -9 after SIGKILL). Each child is a real,
separate process: SIGKILL stops it exactly as it would stop a `shira` started from a shell.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _preload() -> None:
    """Import everything a shira run needs, without starting any thread pools."""
    import faiss  # noqa: F401
    import torch  # noqa: F401
    from transformers import ClapModel, ClapProcessor  # noqa: F401

    import adapters.console  # noqa: F401
    import adapters.discord.adapter  # noqa: F401
    import adapters.telegram.adapter  # noqa: F401
    import bot.cli  # noqa: F401
    import bot.importer  # noqa: F401
    import core.engine  # noqa: F401
    import tests.library_checks  # noqa: F401


def _child(command: dict[str, Any]) -> int:
    """Runs in the forked child: point stdio at the requested files and run the command."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    stdin = os.open(command.get("stdin") or os.devnull, os.O_RDONLY)
    stdout = os.open(command["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(command["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    # fresh stdio objects: the server's stdin buffer may hold later commands; these live until the child exits
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    os.environ.update(command.get("env", {}))
    try:
        if "call" in command:
            module, _, name = command["call"].partition(":")
            result = getattr(importlib.import_module(module), name)(*command.get("args", []))
            code = int(result or 0)
        else:
            from bot.cli import main

            code = main(command["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve() -> None:
    """The server loop: start children on request, report their exits."""
    _preload()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    commands = sys.stdin.buffer
    pending = b""
    while True:
        readable, _, _ = select.select([commands], [], [], 0.02)
        if readable:
            chunk = os.read(commands.fileno(), 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command = json.loads(line)
                out.flush()
                pid = os.fork()
                if pid == 0:
                    os._exit(_child(command))
                out.write(json.dumps({"pid": pid, "tag": command.get("tag")}) + "\n")
                out.flush()
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            out.write(json.dumps({"exit": pid, "code": code, "maxrss_kb": usage.ru_maxrss}) + "\n")
            out.flush()


class ForkServer:
    """The test side: start the server once, then spawn, kill and wait for `shira` runs."""

    def __init__(self, env: dict[str, str] | None = None, ready_timeout: float = 180.0) -> None:
        # children run side by side on few cores: one thread each for torch's and faiss's OpenMP pools
        defaults = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        environ = {**defaults, **os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()
        self._started: queue.Queue[int] = queue.Queue()
        self._exits: dict[int, int] = {}
        self.peak_rss_kb = 0  # the largest resident size any child reached
        self._exited = threading.Condition()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"fork server failed to start: {line!r}")
        self._reader = threading.Thread(target=self._read, name="forkserver-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if "pid" in message:
                self._started.put(message["pid"])
            else:
                with self._exited:
                    self._exits[message["exit"]] = message["code"]
                    self.peak_rss_kb = max(self.peak_rss_kb, message.get("maxrss_kb", 0))
                    self._exited.notify_all()
        with self._exited:
            self._exited.notify_all()

    def spawn(
        self,
        stdout: Path,
        stderr: Path,
        argv: list[str] | None = None,
        stdin: Path | None = None,
        call: str | None = None,
        args: list[Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start `shira argv...` (or a function) in a fresh process, with env added; returns its pid."""
        command: dict[str, Any] = {"stdout": str(stdout), "stderr": str(stderr), "stdin": str(stdin or "") or None}
        command["env"] = env or {}
        if call is not None:
            command.update(call=call, args=args or [])
        else:
            command["argv"] = argv or []
        with self._lock:  # one start at a time, so each pid answers its own command
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            return self._started.get(timeout=30)

    def wait(self, pid: int, timeout: float) -> int:
        """The child's exit code (negative: killed by that signal)."""
        deadline = time.monotonic() + timeout
        with self._exited:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"process {pid} still running after {timeout} s")
                self._exited.wait(left)
            return self._exits.pop(pid)

    def running(self, pid: int) -> bool:
        """True until the server has seen the child end."""
        with self._exited:
            return pid not in self._exits

    def kill(self, pid: int) -> int:
        """SIGKILL a child and return its exit code (-9 if the kill landed, its own code if it had finished)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return self.wait(pid, 30)

    def close(self) -> None:
        """Stop the server (children it started are already gone)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_reader"):
            self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


if __name__ == "__main__":
    serve()
