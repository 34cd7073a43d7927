"""The chat adapters shira knows: where each one's config section and factory live, imported only when needed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Config, Section
from core.config import load_config as load_core_config

if TYPE_CHECKING:
    from adapters.base import Adapter
    from core.messages import Door, Inbox


@dataclass(frozen=True)
class AdapterSpec:
    """One chat adapter: its [name] section's dataclass, its factory, and the variable holding its token."""

    config: str  # "module:Class", a module without platform imports; the class has `enabled` and `token`
    factory: str  # "module:function" called as function(door, section, global_space, inbox) -> Adapter
    token_env: str  # environment variable that overrides the section's `token`
    secret_env: Mapping[str, str] = field(default_factory=dict)  # other secret keys -> their variables


ADAPTERS: Mapping[str, AdapterSpec] = {
    "telegram": AdapterSpec(
        config="adapters.telegram.config:TelegramConfig",
        factory="adapters.telegram:create",
        token_env="SHIRA_TELEGRAM_TOKEN",
        secret_env={"webhook_secret": "SHIRA_TELEGRAM_WEBHOOK_SECRET"},
    ),
    "discord": AdapterSpec(
        config="adapters.discord.config:DiscordConfig",
        factory="adapters.discord:create",
        token_env="SHIRA_DISCORD_TOKEN",
    ),
}


def _resolve(target: str) -> Any:
    """Import "module:attribute" and return the attribute."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def sections() -> dict[str, Section]:
    """Every adapter's config section, for core.config.load_config."""
    return {
        name: Section(_resolve(spec.config), {"token": spec.token_env, **spec.secret_env})
        for name, spec in ADAPTERS.items()
    }


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The whole config, every adapter's section included and checked; raises ConfigError."""
    return load_core_config(path, environ, sections())


def enabled(config: Config) -> list[str]:
    """Names of the adapters switched on in the config, in registry order."""
    return [name for name in ADAPTERS if config.section(name).enabled]


def create(name: str, door: Door, config: Config, inbox: Inbox | None = None) -> Adapter:
    """Import the adapter's package now and hand it the door, only its own section, and the inbox if any."""
    factory = _resolve(ADAPTERS[name].factory)
    return factory(door, config.section(name), config.search.global_space, inbox)
