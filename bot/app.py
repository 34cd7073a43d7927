"""Wiring: open the engine and the inbox, start the adapters the config enables, drain and stop them on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack

from adapters import registry
from adapters.base import Adapter
from bot import health
from bot.supervise import Supervisor, until_stopped
from core.config import Config
from core.engine import Engine
from core.inbox import open_inbox
from core.messages import Door, Inbox

log = logging.getLogger(__name__)


def enabled_adapters(config: Config) -> list[str]:
    """Names of the chat adapters switched on in the config (the registry knows which exist)."""
    return registry.enabled(config)


def create_adapter(name: str, door: Door, config: Config, inbox: Inbox | None = None) -> Adapter:
    """Import an adapter package lazily and hand it the door, only its own config section, and the inbox."""
    return registry.create(name, door, config, inbox)


async def run_adapters(config: Config, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set), or until a part stays down past [health] down_seconds (then
    return 1, for the service manager to restart shira): engine, inbox, then adapters; drained, closed in reverse.

    On the signal every adapter stops taking requests and those in flight get [run] drain_seconds to be
    answered; what is still unanswered stays pending in the inbox, and the next start answers it.
    """
    names = enabled_adapters(config)
    if not names:
        sections = " or ".join(f"[{name}]" for name in registry.ADAPTERS)
        log.error("no chat adapter is enabled: set enabled = true under %s, or use `shira console`", sections)
        return 2
    for name in names:
        if not config.section(name).token:
            log.error("[%s] is enabled but has no token (set %s)", name, registry.ADAPTERS[name].token_env)
            return 2
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(config.health.down_seconds)
    monitor = health.Monitor(supervisor)
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(Engine.open(config, metrics=monitor))
        inbox = await stack.enter_async_context(open_inbox(config))
        monitor.gauge("inbox_backlog", lambda: inbox.backlog)
        adapters: list[Adapter] = []
        for name in names:
            adapter = create_adapter(name, engine, config, inbox)
            await adapter.start()
            stack.push_async_callback(adapter.stop)
            adapters.append(adapter)
            supervisor.watch(name, adapter.problem, adapter.revive)
            log.info("%s adapter started", name)
        if (server := health.serve(config.health, monitor)) is not None:
            stack.push_async_callback(server.stop)
        log.info("shira is running with %s; press Ctrl+C to stop", ", ".join(names))
        code = await until_stopped(stop, supervisor)
        seconds = config.run.drain_seconds
        log.info("shutting down: no new requests; up to %.0f s for those in flight", seconds)
        await asyncio.gather(*(adapter.drain(seconds) for adapter in adapters))
    log.info("shira stopped")
    return code
