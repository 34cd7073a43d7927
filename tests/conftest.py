"""Shared fixtures: tiny offline CLAPs (random, and trained to hear), configs on tmp dirs, an open engine, and a
network guard."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.registry import load_config
from core.config import ClusterConfig, Config, ModelConfig
from core.store import Store
from tests.support.tiny_clap import build_tiny_clap
from tests.support.trained_clap import cached_trained_clap

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # unix socket path
    if not (isinstance(address, tuple) and address):
        return False
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a non-loopback address."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(sock: socket.socket, address: object) -> object:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        return real_connect(sock, address)  # type: ignore[arg-type]

    def guarded_ex(sock: socket.socket, address: object) -> int:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        return real_connect_ex(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLAP saved with save_pretrained, loaded later through from_pretrained."""
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """A tiny CLAP trained to tell tones, noises, clicks, chirps and silence apart (tests/support/trained_clap.py),
    trained once and kept in the temp dir under a hash of its recipe, so later sessions load it."""
    return cached_trained_clap(Path(tempfile.gettempdir()) / "shira-test-models")


def make_config(data_dir: Path, model_dir: Path, **sections: dict[str, object]) -> Config:
    """A Config on a tmp data dir with the tiny model; keyword arguments override section fields."""
    config = load_config(None, environ={})
    config = dataclasses.replace(
        config, data_dir=data_dir, model=ModelConfig(id=str(model_dir), precision="fp32", batch_size=4)
    )
    for name, values in sections.items():
        if name in config.adapters:  # a platform section: held in config.adapters by adapter name
            section = dataclasses.replace(config.adapters[name], **values)
            config = dataclasses.replace(config, adapters={**config.adapters, name: section})
        else:
            config = dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **values)})
    return config


@pytest.fixture
def config(tmp_path: Path, tiny_model_dir: Path) -> Config:
    """A Config with its data dir in tmp_path and the tiny model."""
    return make_config(tmp_path / "data", tiny_model_dir)


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[object]:
    """An open Engine on the tiny model."""
    from core.engine import Engine

    async with Engine.open(config) as opened:
        yield opened


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session (a DSN without a database); skipped where there is none.

    With SHIRA_REQUIRE_SERVERS=1 (set by .ci/run) a server that can't be had fails the tests instead.
    """
    from tests.support.postgres_server import ServerUnavailable, server

    try:
        with server() as dsn:
            yield dsn
    except ServerUnavailable as exc:
        if os.environ.get("SHIRA_REQUIRE_SERVERS") == "1":
            pytest.fail(f"PostgreSQL is required here (SHIRA_REQUIRE_SERVERS=1): {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database of its own for one test."""
    from tests.support.postgres_server import create_database, drop_database, run_async

    dsn = run_async(create_database(postgres_server))
    yield dsn
    run_async(drop_database(dsn))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which store a test runs on: every test using it runs on both, with the same assertions."""
    return str(request.param)


@pytest.fixture
def backend_config(backend: str, request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Config:
    """The config fixture's Config, on the backend's store (a fresh PostgreSQL database for postgres)."""
    config = make_config(tmp_path / "data", tiny_model_dir)
    if backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        config = dataclasses.replace(config, cluster=ClusterConfig(postgres_dsn=dsn))
    return config


@pytest.fixture
async def store(backend_config: Config) -> AsyncIterator[Store]:
    """An open store on the backend (SQLite in the data dir, or PostgreSQL)."""
    from core.engine import open_store

    opened = await open_store(backend_config)
    yield opened
    await opened.close()
