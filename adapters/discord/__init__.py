"""The Discord adapter (discord.py): slash commands, a message command and voice messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.discord.config import DiscordConfig
from core.messages import Door, Inbox

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter

__all__ = ["create"]


def create(
    door: Door, config: DiscordConfig, global_space: str = "global", inbox: Inbox | None = None
) -> DiscordAdapter:
    """Build the adapter; the caller awaits start() and stop() inside its lifespan."""
    from adapters.discord.adapter import DiscordAdapter  # imported here: the config loads without discord

    return DiscordAdapter(door, config, global_space, inbox=inbox)
