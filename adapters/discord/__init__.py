"""The Discord adapter (discord.py): slash commands, a message command and voice messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.discord.adapter import DiscordAdapter
from core.config import DiscordConfig

if TYPE_CHECKING:
    from core.engine import Engine

__all__ = ["DiscordAdapter", "create"]


def create(engine: Engine, config: DiscordConfig) -> DiscordAdapter:
    """Build the adapter; the caller awaits start() and stop() inside its lifespan."""
    return DiscordAdapter(engine, config)
