"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests (or the server SHIRA_TEST_POSTGRES names)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _binaries() -> Path:
    """SHIRA_POSTGRES_BIN, else the newest Debian PostgreSQL's bin directory."""
    if given := os.environ.get("SHIRA_POSTGRES_BIN"):
        return Path(given)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


BIN = _binaries()
START_SECONDS = 30.0


class ServerUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or the cluster would not start."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster in a temporary directory; yields a superuser DSN (no database part); removed after."""
    if not (BIN / "initdb").exists():
        raise ServerUnavailable(f"no PostgreSQL binaries in {BIN} (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="shira-pg-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    log = root / "server.log"
    try:
        _run([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=200"
        _run([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start"])
    except ServerUnavailable:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise ServerUnavailable(f"PostgreSQL would not start: {detail}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_owner([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(_as_owner(argv), capture_output=True, text=True, timeout=START_SECONDS * 2)
    if proc.returncode != 0:
        raise ServerUnavailable(f"{Path(argv[0]).name} failed: {proc.stderr.strip() or proc.stdout.strip()}")


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The server SHIRA_TEST_POSTGRES names (a DSN without a database), else a throwaway cluster."""
    given = os.environ.get("SHIRA_TEST_POSTGRES", "")
    if given:
        yield given.rstrip("/")
        return
    with cluster() as dsn:
        yield dsn


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end on a loop of its own (in a thread: a test's loop may be running here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def create_database(server_dsn: str) -> str:
    """A fresh, empty database on the server; returns its DSN."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(f"{server_dsn}/postgres", timeout=START_SECONDS)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server_dsn}/{name}"


async def drop_database(dsn: str) -> None:
    """Drop a database create_database made (its connections are ended first)."""
    import asyncpg

    server_dsn, name = dsn.rsplit("/", 1)
    conn = await asyncpg.connect(f"{server_dsn}/postgres", timeout=START_SECONDS)
    try:
        deadline = time.monotonic() + 10
        while True:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except asyncpg.ObjectInUseError:
                if time.monotonic() > deadline:
                    raise
    finally:
        await conn.close()
