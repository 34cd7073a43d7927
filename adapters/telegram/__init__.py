"""The Telegram adapter (python-telegram-bot): voice notes, /search, /add and inline mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.telegram.adapter import TelegramAdapter
from core.config import TelegramConfig

if TYPE_CHECKING:
    from core.engine import Engine

__all__ = ["TelegramAdapter", "create"]


def create(engine: Engine, config: TelegramConfig) -> TelegramAdapter:
    """Build the adapter; call `await adapter.start()` inside the engine's lifespan and `stop()` on the way out."""
    return TelegramAdapter(engine, config)
