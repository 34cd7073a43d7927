"""Logging set-up that never prints a token."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from urllib.parse import quote

from core.config import Config


def secret_forms(secrets: list[str]) -> list[str]:
    """Each secret as written and as it appears percent-encoded in a URL (Telegram tokens hold a ':')."""
    forms = {form for s in secrets if s and len(s) >= 6 for form in (s, quote(s, safe=""), quote(s))}
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """The text with every secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Replace every configured secret in a log record with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secret_forms(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message, any traceback text and any stack text."""
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not raise here, nor print the raw arguments later
            message = f"{record.msg} (bad log arguments: {record.args!r})"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def redacting_excepthook(secrets: list[str]) -> ExceptHook:
    """A sys.excepthook that prints an uncaught exception's traceback with the secrets taken out."""
    forms = secret_forms(secrets)

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(redact(text, forms))
        sys.stderr.flush()

    return hook


def setup_logging(config: Config, verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr at the configured level, with secrets redacted (uncaught tracebacks included)."""
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else getattr(logging, config.log_level.upper()))
    secrets = [config.telegram.token, config.discord.token]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if any(secrets):
        sys.excepthook = redacting_excepthook(secrets)
    for noisy in ("httpx", "httpcore", "faiss.loader", "discord.gateway", "discord.http"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
