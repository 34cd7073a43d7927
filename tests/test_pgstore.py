"""Cluster mode's store: choosing it, an unreachable server named (password masked) in time, the files lock."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest

from adapters.registry import load_config
from bot.cli import main
from core import pgstore
from core.config import ClusterConfig, Config, ConfigError, ServerUnreachable, masked_url
from core.engine import Engine, open_store
from core.pgstore import PostgresStore
from core.store import NewSample, SqliteStore
from tests.support.postgres_server import free_port
from tests.test_catchup import sample


def test_masked_urls_keep_everything_but_the_password() -> None:
    assert masked_url("postgresql://bob:hunter2@db.local:5432/shira") == "postgresql://bob:***@db.local:5432/shira"
    assert masked_url("postgresql://bob@db.local/shira") == "postgresql://bob@db.local/shira"
    assert masked_url("postgresql://db/shira?password=hunter2&x=1") == "postgresql://db/shira?password=***&x=1"
    assert masked_url("redis://:hunter2@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"


def test_the_cluster_section_is_checked_and_its_dsn_never_echoed(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[cluster]\npostgres_dsn = "mysql://bob:hunter2@db/shira"\n')
    with pytest.raises(ConfigError, match=r"\[cluster\] postgres_dsn must be empty or a postgresql:// URL") as err:
        load_config(toml)
    assert "hunter2" not in str(err.value)
    toml.write_text('[cluster]\npostgres_dns = ""\n')
    with pytest.raises(ConfigError, match="unknown key postgres_dns"):
        load_config(toml)
    env = load_config(None, environ={"SHIRA_POSTGRES_DSN": "postgresql://u@127.0.0.1/db"})
    assert env.cluster == ClusterConfig(postgres_dsn="postgresql://u@127.0.0.1/db")
    assert load_config(None, environ={}).cluster.postgres_dsn == ""  # embedded by default


async def test_the_configured_backend_is_opened(backend_config: Config) -> None:
    store = await open_store(backend_config)
    try:
        assert isinstance(store, PostgresStore if backend_config.cluster.postgres_dsn else SqliteStore)
    finally:
        await store.close()


async def test_a_refused_connection_names_the_server_with_its_password_masked() -> None:
    dsn = f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/shira"
    with pytest.raises(ServerUnreachable) as err:
        await PostgresStore.open(dsn)
    message = str(err.value)
    assert message.startswith(f"can't reach PostgreSQL at postgresql://bob:***@127.0.0.1:{dsn.rsplit(':', 1)[1]}")
    assert "hunter2" not in message


async def test_a_server_that_never_answers_is_given_up_on_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgstore, "CONNECT_SECONDS", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dsn = f"postgresql://bob@127.0.0.1:{silent.getsockname()[1]}/shira"
        with pytest.raises(ServerUnreachable, match="can't reach PostgreSQL at postgresql://bob@127.0.0.1"):
            await asyncio.wait_for(PostgresStore.open(dsn), 10)


def test_the_cli_reports_an_unreachable_store(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIRA_POSTGRES_DSN", f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/shira")
    assert main(["--data-dir", str(tmp_path / "d"), "stats"]) == 2
    err = capsys.readouterr().err
    assert "shira: can't reach PostgreSQL at postgresql://bob:***@127.0.0.1" in err and "hunter2" not in err


async def test_engine_open_fails_clearly_too(config: Config) -> None:
    broken = dataclasses.replace(config, cluster=ClusterConfig(f"postgresql://u@127.0.0.1:{free_port()}/x"))
    with pytest.raises(ServerUnreachable, match="can't reach PostgreSQL"):
        async with Engine.open(broken, model=False):
            pass


async def test_a_sweep_waits_for_an_addition_storing_its_file(backend_config: Config) -> None:
    """The addition holds the files lock from storing its file to committing its row; a sweep elsewhere waits."""
    adder, sweeper = await open_store(backend_config), await open_store(backend_config)
    storing, deleted = asyncio.Event(), []
    row = sample("s", 1)

    async def store_file(new: NewSample) -> NewSample:
        storing.set()
        await asyncio.sleep(0.3)  # the file is on disk, the row not yet committed
        return new

    async def delete(unused: set[str]) -> None:
        deleted.extend(unused)

    try:
        adding = asyncio.create_task(adder.add_sample(row, store_file))
        await storing.wait()
        unused = await sweeper.sweep([row.sha256, "0" * 64], delete)
        await adding
        assert unused == {"0" * 64} and deleted == ["0" * 64]  # the new file was kept
    finally:
        await adder.close()
        await sweeper.close()
