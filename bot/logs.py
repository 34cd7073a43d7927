"""Logging set-up that never prints a token."""

from __future__ import annotations

import logging
import sys

from core.config import Config


class RedactSecrets(logging.Filter):
    """Replace every configured secret in a log record with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message and any traceback text."""
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            message = message.replace(secret, "***")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "***")
        record.msg, record.args = message, None
        return True


def setup_logging(config: Config, verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr at the configured level, with secrets redacted."""
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else getattr(logging, config.log_level.upper()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets([config.telegram.token, config.discord.token]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "faiss.loader", "discord.gateway", "discord.http"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
