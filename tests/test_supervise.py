"""Supervision: a part that stops is revived with backoff, one that stays down ends `shira run` with a non-zero
exit; shown on the supervisor alone, on each adapter against its fake server, and on `shira run` as a process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import create as create_discord
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.config import DiscordConfig
from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.config import TelegramConfig
from bot.supervise import FIRST_BACKOFF, PartDown, Supervisor, until_stopped
from core.messages import Reply, ReplyKind, Request
from tests.fakes.discord_api import FakeDiscord, user_payload
from tests.fakes.telegram_api import FakeTelegram, private_chat, user
from tests.support.process import STARTUP_SECONDS, shira_run, write_config

HELP = "I find sounds by meaning: try /search thunder"


class HelpDoor:
    """A door that answers every request with the help text (no engine, no model)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def handle(self, request: Request) -> Reply:
        self.requests.append(request)
        return Reply(ReplyKind.HELP, HELP)


async def eventually(predicate: Any, timeout: float = 30.0) -> None:
    """Wait until predicate() is true, checking every 50 ms."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Part:
    """A part whose health the test sets; revive() is counted and may heal it."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.revives: list[float] = []
        self.heals_on: int | None = None

    def check(self) -> str | None:
        return self.problem

    async def revive(self) -> None:
        self.revives.append(0.0)
        if self.heals_on is not None and len(self.revives) >= self.heals_on:
            self.problem = None


async def test_a_part_that_stops_is_revived_with_backoff_until_it_is_back() -> None:
    clock, part = Clock(), Part()
    supervisor = Supervisor(down_seconds=60, clock=clock)
    supervisor.watch("poller", part.check, part.revive)
    await supervisor.check()
    assert part.revives == [] and supervisor.problems() == {}
    part.problem, part.heals_on = "polling stopped", 3
    tried_at = []
    for _ in range(8):  # one round a second
        before = len(part.revives)
        await supervisor.check()
        if len(part.revives) > before:
            tried_at.append(clock.now)
        clock.now += 1
    assert tried_at == [100.0, 101.0, 103.0]  # 1 s, then 2 s apart; the third attempt healed it
    assert supervisor.problems() == {}
    part.problem, part.heals_on, part.revives = "again", None, []
    await supervisor.check()
    assert len(part.revives) == 1  # back to the first backoff once it had recovered
    assert FIRST_BACKOFF == 1.0


async def test_a_part_down_too_long_is_fatal_and_a_failing_check_is_a_problem() -> None:
    clock, part = Clock(), Part()
    supervisor = Supervisor(down_seconds=10, clock=clock)
    supervisor.watch("gateway", part.check, part.revive)

    def broken() -> str | None:
        raise RuntimeError("no state")

    supervisor.watch("worker", broken)
    with pytest.raises(PartDown, match="worker has been down for 10 s: its health check failed"):
        for _ in range(12):
            await supervisor.check()
            clock.now += 1
    assert supervisor.problems() == {"worker": "its health check failed: RuntimeError: no state"}


async def test_until_stopped_is_0_for_a_stop_and_1_for_a_part_down() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(down_seconds=0.2, every=0.05)
    part = Part()
    supervisor.watch("adapter", part.check)
    asyncio.get_running_loop().call_later(0.1, stop.set)
    assert await asyncio.wait_for(until_stopped(stop, supervisor), 5) == 0
    part.problem = "disconnected"
    assert await asyncio.wait_for(until_stopped(asyncio.Event(), supervisor), 5) == 1


@contextlib.asynccontextmanager
async def watching(adapter: Any, down_seconds: float = 60.0) -> AsyncIterator[asyncio.Task[int]]:
    """The adapter started and supervised as `shira run` does; yields the task that ends with the exit code."""
    supervisor = Supervisor(down_seconds, every=0.2)
    supervisor.watch(adapter.name, adapter.problem, adapter.revive)
    await adapter.start()
    stop = asyncio.Event()
    task = asyncio.create_task(until_stopped(stop, supervisor))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await adapter.stop()


async def telegram_help(fake: FakeTelegram, sender: dict[str, Any]) -> None:
    """Send /help and wait for the bot's answer."""
    asked = fake.push_message(private_chat(sender), sender, "/help")
    await fake.wait_for(
        "sendMessage",
        lambda c: (c.params.get("reply_parameters") or {}).get("message_id") == asked["message_id"],
        timeout=30,
    )


def telegram(fake: FakeTelegram, door: HelpDoor) -> TelegramAdapter:
    config = TelegramConfig(enabled=True, token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
    return TelegramAdapter(door, config, group_messages_per_minute=1000, poll_timeout=1)


@pytest.mark.timeout(120)
async def test_telegram_polling_refused_for_a_while_is_reported_then_recovers() -> None:
    async with FakeTelegram() as fake:
        adapter = telegram(fake, HelpDoor())
        async with watching(adapter) as exit_code:
            await telegram_help(fake, user(7, "Ann"))
            fake.fail("getUpdates", "Unauthorized", code=401, times=3)  # the poller backs off and tries again
            await eventually(lambda: "getUpdates failing" in (adapter.problem() or ""))
            await telegram_help(fake, user(8, "Ben"))  # answered once getUpdates works again
            assert adapter.problem() is None and not exit_code.done()


@pytest.mark.timeout(120)
async def test_telegram_poller_that_dies_is_noticed_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeTelegram() as fake:
        adapter = telegram(fake, HelpDoor())
        async with watching(adapter) as exit_code:
            await telegram_help(fake, user(7, "Ann"))
            old = adapter._poller
            assert old is not None
            old.cancel()  # the test's hook: the polling task ends without anyone stopping the adapter
            await eventually(lambda: adapter._poller is not old)  # a new poller
            await telegram_help(fake, user(8, "Ben"))
            assert adapter.problem() is None and not exit_code.done()
        assert "telegram: starting polling again (polling stopped" in caplog.text


@pytest.mark.timeout(120)
async def test_telegram_failing_for_good_is_fatal() -> None:
    async with FakeTelegram() as fake:
        adapter = telegram(fake, HelpDoor())
        async with watching(adapter, down_seconds=3) as exit_code:
            await telegram_help(fake, user(7, "Ann"))
            fake.fail("getUpdates", "Bad Gateway", code=502, times=10**6)  # PTB retries this by itself, forever
            assert await asyncio.wait_for(asyncio.shield(exit_code), 30) == 1
            assert "getUpdates failing" in (adapter.problem() or "")


def discord(fake: FakeDiscord, door: HelpDoor) -> DiscordAdapter:
    config = DiscordConfig(
        enabled=True,
        token=fake.token,
        api_base_url=fake.api_base_url,
        gateway_url=fake.gateway_url,
        dev_guild=fake.guild_id,
    )
    return create_discord(door, config)  # type: ignore[return-value]


async def discord_help(fake: FakeDiscord) -> None:
    """A /help slash command, answered."""
    interaction = fake.slash("help", user_payload(fake.new_id(), "zed"))
    await fake.dispatch("INTERACTION_CREATE", interaction)
    token = interaction["token"]
    await fake.wait_for("PATCH", rf"/webhooks/{fake.app_id}/{token}/messages/@original", timeout=30)


@pytest.mark.timeout(120)
async def test_discord_gateway_task_killed_is_connected_again() -> None:
    async with FakeDiscord() as fake:
        adapter = discord(fake, HelpDoor())
        async with watching(adapter) as exit_code:
            await discord_help(fake)
            identified = len(fake.identify_payloads)
            adapter._connect_task.cancel()  # type: ignore[union-attr]  # the test's hook
            await eventually(lambda: len(fake.identify_payloads) > identified)
            await eventually(lambda: adapter.problem() is None)
            await discord_help(fake)
            assert fake.connections == 1 and not exit_code.done()  # the old socket was closed, not left behind


@pytest.mark.timeout(120)
async def test_discord_gateway_closed_for_good_is_fatal() -> None:
    async with FakeDiscord() as fake:
        adapter = discord(fake, HelpDoor())
        async with watching(adapter, down_seconds=4) as exit_code:
            await discord_help(fake)
            await fake.close_gateway(4004, forever=True)  # "authentication failed": discord.py gives up
            assert await asyncio.wait_for(asyncio.shield(exit_code), 30) == 1
        assert len(fake.find("GET", r"/users/@me")) >= 2  # it logged in again with a new client before giving up


def with_health(config: Path, down_seconds: float) -> Path:
    config.write_text(config.read_text() + f"\n[health]\ndown_seconds = {down_seconds}\n")
    return config


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_shira_run_exits_non_zero_when_telegram_stays_down(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with FakeTelegram(token="987654:supervised-token") as fake:
        settings = {"base_url": fake.base_url, "base_file_url": fake.base_file_url}
        config = with_health(
            write_config(tmp_path / "s.toml", tmp_path / "data", tiny_model_dir, "telegram", settings), 4
        )
        async with shira_run(config, {"SHIRA_TELEGRAM_TOKEN": fake.token}) as shira:
            await shira.reaches(eventually(lambda: "shira is running" in shira.output, STARTUP_SECONDS), "started")
            fake.fail("getUpdates", "Unauthorized", code=401, times=10**6)
            await asyncio.wait_for(shira.proc.wait(), 60)  # exits by itself, without a signal
        assert shira.returncode == 1, shira.output
        assert "telegram has been down" in shira.output and "restarts shira" in shira.output
        assert fake.token not in shira.output


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_shira_run_exits_non_zero_when_the_discord_gateway_closes_for_good(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with FakeDiscord(token="supervised-token-123") as fake:
        settings = fake.endpoints()
        config = with_health(
            write_config(tmp_path / "s.toml", tmp_path / "data", tiny_model_dir, "discord", settings), 4
        )
        async with shira_run(config, {"SHIRA_DISCORD_TOKEN": fake.token}) as shira:
            await shira.reaches(eventually(lambda: "shira is running" in shira.output, 180), "started")
            await fake.close_gateway(4004, forever=True)
            await asyncio.wait_for(shira.proc.wait(), 60)  # exits by itself, without a signal
        assert shira.returncode == 1, shira.output
        assert "discord has been down" in shira.output and "restarts shira" in shira.output
        assert fake.token not in shira.output
