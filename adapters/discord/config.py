"""The [discord] config section: no platform imports, so loading the config never imports discord.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from core.config import SECTION, Bool, Count, Limit, Str, Token, Url


def _gateway_url(value: str) -> str:
    if value and not value.startswith(("ws://", "wss://")):
        raise ValueError('must start with ws:// or wss://, or be "" to ask the API')
    return value


@dataclass(frozen=True)
class DiscordConfig:
    """The Discord adapter (discord.py)."""

    __pydantic_config__ = SECTION

    enabled: Bool = False
    token: Token = ""  # better: SHIRA_DISCORD_TOKEN
    api_base_url: Url = "https://discord.com/api/v10"
    gateway_url: Annotated[Str, AfterValidator(_gateway_url)] = ""  # empty: ask the API
    dev_guild: Limit = 0  # sync commands to this guild only; 0 syncs globally
    add_role: Str = ""  # empty: anyone may /add
    admin_role: Str = ""  # members with this role (name or id) may change library settings, as Manage Server may
    global_library: Bool = False
    watch_channels: tuple[Count, ...] = ()  # empty: every channel, on mention
    shard_count: Limit = 0  # 0: one gateway connection; else the bot's total shards, split across processes
    shard_ids: tuple[Limit, ...] = ()  # the shards this process runs (each < shard_count); empty: all of them
