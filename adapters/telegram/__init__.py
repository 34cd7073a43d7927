"""The Telegram adapter (python-telegram-bot): voice notes, /search, /add and inline mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.telegram.config import TelegramConfig
from core.messages import Door, Inbox

if TYPE_CHECKING:
    from adapters.telegram.adapter import TelegramAdapter

__all__ = ["create"]


def create(
    door: Door, config: TelegramConfig, global_space: str = "global", inbox: Inbox | None = None
) -> TelegramAdapter:
    """Build the adapter; call `await adapter.start()` inside the engine's lifespan and `stop()` on the way out."""
    from adapters.telegram.adapter import TelegramAdapter  # imported here: the config loads without telegram

    return TelegramAdapter(door, config, global_space, inbox=inbox)
