"""Shared fixtures: tiny offline CLAPs (random, and trained to hear), configs on tmp dirs, an open engine, and a
network guard."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.registry import load_config
from core.config import Config, ModelConfig
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
