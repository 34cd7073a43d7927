"""The [telegram] config section: no platform imports, so loading the config never imports python-telegram-bot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from core.config import SECTION, Bool, Float, Token, Url


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram adapter (python-telegram-bot)."""

    __pydantic_config__ = SECTION

    enabled: Bool = False
    token: Token = ""  # better: SHIRA_TELEGRAM_TOKEN
    base_url: Url = "https://api.telegram.org/bot"
    base_file_url: Url = "https://api.telegram.org/file/bot"
    local_mode: Bool = False  # a local Bot API server: no 20 MB download limit
    global_library: Bool = False
    poll_interval: Annotated[Float, Field(ge=0)] = 0.0  # seconds between getUpdates calls
