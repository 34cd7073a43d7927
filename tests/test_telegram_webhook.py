"""Webhook mode: the fake Bot API posts updates to the adapter's endpoint, which journals each before its 200."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from adapters.registry import load_config
from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.config import TelegramConfig
from adapters.telegram.webhook import SECRET_HEADER
from core.config import ConfigError
from core.engine import Engine
from core.inbox import SqliteInbox
from tests.conftest import make_config
from tests.fakes.telegram_api import FakeTelegram, private_chat, user

ALICE = user(201, "Alice", "alice")
SECRET = "s3cret-token_for-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _section(fake: FakeTelegram, port: int, secret: str = SECRET) -> TelegramConfig:
    return TelegramConfig(
        enabled=True,
        token=fake.token,
        base_url=fake.base_url,
        base_file_url=fake.base_file_url,
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        webhook_listen=f"127.0.0.1:{port}",
        webhook_secret=secret,
    )


@asynccontextmanager
async def _frontend(
    fake: FakeTelegram, engine: Engine, inbox: SqliteInbox, port: int
) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(engine, _section(fake, port), inbox=inbox, group_messages_per_minute=1000)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


@pytest.fixture
async def engine(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Engine]:
    async with Engine.open(make_config(tmp_path, tiny_model_dir), model=False) as engine:
        yield engine


async def test_updates_arrive_by_post_and_are_answered_without_polling(tmp_path: Path, engine: Engine) -> None:
    port = _free_port()
    async with FakeTelegram() as fake, SqliteInbox.open(tmp_path / "shira.db") as inbox:
        async with _frontend(fake, engine, inbox, port):
            hook = fake.calls_to("setWebhook")[-1].params
            assert hook["url"] == f"http://127.0.0.1:{port}/telegram/hook"
            assert hook["secret_token"] == SECRET
            chat = private_chat(ALICE)
            fake.push_message(chat, ALICE, "/help")
            reply = await fake.wait_for("sendMessage", lambda call: call.params.get("chat_id") == chat["id"])
            assert "/search" in reply.params["text"]
            await fake.wait_until(lambda: fake.confirmed > 0)
        assert fake.calls_to("getUpdates") == []
        assert fake.calls_to("deleteWebhook") == []
        assert await inbox.pending("telegram") == []  # journaled, answered, marked done


async def test_a_post_without_the_secret_is_refused_and_not_journaled(tmp_path: Path, engine: Engine) -> None:
    port = _free_port()
    async with FakeTelegram() as fake, SqliteInbox.open(tmp_path / "shira.db") as inbox:
        async with _frontend(fake, engine, inbox, port):
            forged = {"update_id": 999, "message": {"message_id": 1, "date": 0, "chat": private_chat(ALICE)}}
            url = f"http://127.0.0.1:{port}/telegram/hook"
            async with aiohttp.ClientSession() as session:
                for headers in ({}, {SECRET_HEADER: "wrong"}):
                    async with session.post(url, json=forged, headers=headers) as response:
                        assert response.status == 403
                async with session.post(url, data=b"{not json", headers={SECRET_HEADER: SECRET}) as response:
                    assert response.status == 400
        assert await inbox.pending("telegram") == []
        assert fake.calls_to("sendMessage") == []


async def test_a_failed_journal_answers_500_and_telegram_posts_again(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    async with FakeTelegram() as fake, SqliteInbox.open(tmp_path / "shira.db") as inbox:
        real_record = inbox.record
        failures = [OSError("disk full")]

        async def flaky_record(platform: str, items: dict[str, dict[str, object]]) -> set[str]:
            if failures:
                raise failures.pop()
            return await real_record(platform, items)

        monkeypatch.setattr(inbox, "record", flaky_record)
        async with _frontend(fake, engine, inbox, port):
            chat = private_chat(ALICE)
            update_id = fake.push_message(chat, ALICE, "/help")["message_id"]
            await fake.wait_for("sendMessage", lambda call: call.params.get("chat_id") == chat["id"])
        statuses = [status for _, status in fake.deliveries]
        assert statuses[:2] == [500, 200], statuses
        assert update_id and len(fake.calls_to("sendMessage")) == 1


async def test_while_draining_posts_get_503_and_the_next_start_answers_them(tmp_path: Path, engine: Engine) -> None:
    port = _free_port()
    async with FakeTelegram() as fake, SqliteInbox.open(tmp_path / "shira.db") as inbox:
        chat = private_chat(ALICE)
        async with _frontend(fake, engine, inbox, port) as adapter:
            await adapter.drain(1.0)
            fake.push_message(chat, ALICE, "/help")
            await fake.wait_until(lambda: any(status == 503 for _, status in fake.deliveries))
        assert fake.calls_to("sendMessage") == []
        async with _frontend(fake, engine, inbox, port):  # the restarted frontend, on the same address
            await fake.wait_for("sendMessage", lambda call: call.params.get("chat_id") == chat["id"])
        assert fake.confirmed > 0


def test_webhook_config_is_checked(tmp_path: Path) -> None:
    fake = FakeTelegram()
    with pytest.raises(ConfigError, match="webhook_secret"):
        TelegramAdapter(object(), _section(fake, 8443, secret=""))  # type: ignore[arg-type]
    path = tmp_path / "config.toml"
    path.write_text('[telegram]\nwebhook_url = "https://bot.example/hook"\nwebhook_secret = "has spaces"\n')
    with pytest.raises(ConfigError, match=r"\[telegram\] webhook_secret") as info:
        load_config(path, environ={})
    assert "has spaces" not in str(info.value)  # a secret is never repeated
    path.write_text('[telegram]\nwebhook_listen = "8443"\n')
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(path, environ={})
    path.write_text('[telegram]\nwebhook_url = "https://bot.example/hook"\n')
    config = load_config(path, environ={"SHIRA_TELEGRAM_WEBHOOK_SECRET": SECRET})
    assert config.section("telegram").webhook_secret == SECRET
