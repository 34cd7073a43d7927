"""The Discord adapter (discord.py): slash commands, a message command and voice messages."""

from __future__ import annotations

from adapters.discord.adapter import DiscordAdapter
from core.config import DiscordConfig
from core.messages import Door

__all__ = ["DiscordAdapter", "create"]


def create(door: Door, config: DiscordConfig, global_space: str = "global") -> DiscordAdapter:
    """Build the adapter; the caller awaits start() and stop() inside its lifespan."""
    return DiscordAdapter(door, config, global_space)
