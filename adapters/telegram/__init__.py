"""The Telegram adapter (python-telegram-bot): voice notes, /search, /add and inline mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.telegram.config import TelegramConfig

if TYPE_CHECKING:
    from adapters.telegram.adapter import TelegramAdapter
    from core.engine import Engine

__all__ = ["create"]


def create(engine: Engine, config: TelegramConfig) -> TelegramAdapter:
    """Build the adapter; call `await adapter.start()` inside the engine's lifespan and `stop()` on the way out."""
    from adapters.telegram.adapter import TelegramAdapter  # imported here: the config loads without telegram

    return TelegramAdapter(engine, config)
