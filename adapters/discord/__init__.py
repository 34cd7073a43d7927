"""The Discord adapter (discord.py): slash commands, a message command and voice messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.discord.config import DiscordConfig

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter
    from core.engine import Engine

__all__ = ["create"]


def create(engine: Engine, config: DiscordConfig) -> DiscordAdapter:
    """Build the adapter; the caller awaits start() and stop() inside its lifespan."""
    from adapters.discord.adapter import DiscordAdapter  # imported here: the config loads without discord

    return DiscordAdapter(engine, config)
