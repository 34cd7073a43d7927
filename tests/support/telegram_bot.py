"""A running Telegram bot for tests: an open engine and a started adapter on a fake Bot API, held in one task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.config import TelegramConfig
from core.config import Config
from core.engine import Engine
from tests.fakes.telegram_api import FakeTelegram


@dataclass
class Running:
    """The bot as `shira run` would have it: an open engine and a started adapter."""

    fake: FakeTelegram
    engine: Engine
    adapter: TelegramAdapter


def telegram_config(fake: FakeTelegram) -> TelegramConfig:
    """The adapter's section, pointed at the fake."""
    return TelegramConfig(enabled=True, token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)


async def _serve(
    fake: FakeTelegram,
    config: Config,
    adapter_args: dict[str, Any],
    ready: asyncio.Future[Running],
    stop: asyncio.Event,
) -> None:
    """Hold the engine and the adapter open in one task, like the real lifespan."""
    try:
        async with Engine.open(config) as engine:
            adapter = TelegramAdapter(engine, telegram_config(fake), **adapter_args)
            await adapter.start()
            try:
                ready.set_result(Running(fake, engine, adapter))
                await stop.wait()
            finally:
                await adapter.stop()
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


@contextlib.asynccontextmanager
async def running_bot(fake: FakeTelegram, config: Config, **adapter_args: Any) -> AsyncIterator[Running]:
    """Open the engine and start the adapter (keyword arguments go to TelegramAdapter); stop both on the way out."""
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(_serve(fake, config, adapter_args, ready, stop))
    try:
        yield await asyncio.wait_for(ready, 120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
