"""A real redis-server on loopback for the session: a free port, a tmp dir, no persistence; a fresh prefix per test.

Without /usr/bin/redis-server (the Debian package) the tests that need it skip, unless SHIRA_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_SECONDS = 20.0


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server: its URL and process."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]

    def prefix(self) -> str:
        """A key prefix no other test uses."""
        return f"test-{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_exe() -> str:
    """The redis-server binary; skips the test (fails it with SHIRA_REQUIRE_SERVERS=1) if there is none."""
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if exe is not None:
        return exe
    if os.environ.get("SHIRA_REQUIRE_SERVERS") == "1":
        pytest.fail(
            "redis-server is required (SHIRA_REQUIRE_SERVERS=1) but not installed: apt-get install redis-server"
        )
    pytest.skip("redis-server is not installed (apt-get install redis-server)")


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 at a free port, working in directory, stopped on exit."""
    port = _free_port()
    args = [redis_exe(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
    args += ["--save", "", "--appendonly", "no", "--logfile", ""]
    with (directory / "redis.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start: {text}")
                time.sleep(0.05)
            yield RedisServer(f"redis://127.0.0.1:{port}/0", port, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1 for the whole session."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
