"""The Telegram adapter (python-telegram-bot): voice notes, /search, /add and inline mode."""

from __future__ import annotations

from adapters.telegram.adapter import TelegramAdapter
from core.config import TelegramConfig
from core.messages import Door

__all__ = ["TelegramAdapter", "create"]


def create(door: Door, config: TelegramConfig, global_space: str = "global") -> TelegramAdapter:
    """Build the adapter; call `await adapter.start()` inside the engine's lifespan and `stop()` on the way out."""
    return TelegramAdapter(door, config, global_space)
