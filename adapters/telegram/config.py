"""The [telegram] config section: no platform imports, so loading the config never imports python-telegram-bot."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field

from core.config import SECTION, Bool, Float, Str, Token, Url


def _webhook_secret(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
        raise ValueError("must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
    return value


def _webhook_url(value: str) -> str:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError("must be empty (poll getUpdates) or the https:// address Telegram posts updates to")
    return value


def _listen(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8443")
    return value


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
    webhook_url: Annotated[Str, AfterValidator(_webhook_url)] = ""  # empty: poll with getUpdates
    webhook_listen: Annotated[Str, AfterValidator(_listen)] = "127.0.0.1:8443"
    webhook_secret: Annotated[Str, AfterValidator(_webhook_secret)] = ""  # better: SHIRA_TELEGRAM_WEBHOOK_SECRET
