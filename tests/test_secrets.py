"""Tokens from the environment or the config never appear in logs, tracebacks or error replies."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bot.logs import RedactSecrets, redacting_excepthook, setup_logging
from core.engine import Engine
from core.messages import AudioRef, Command, ReplyKind, Request
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[1]
TELEGRAM_TOKEN = "123456789:AAEtelegram-SECRET_token-0123456789"
DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GsEkRt.discord-SECRET-token-abcdef"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_with(message: str, *args: object, exc: BaseException | None = None, stack: str | None = None) -> str:
    """Log one record through RedactSecrets and return what the handler wrote."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets([TELEGRAM_TOKEN, DISCORD_TOKEN, "", "short"]))
    logger = logging.getLogger("tests.secrets.unit")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(message, *args)
        else:
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, None, sinfo=stack)
            logger.handle(record)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_redaction_covers_args_tracebacks_groups_stacks_and_urls() -> None:
    url = f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe"
    cases = [
        record_with("calling %s", url),
        record_with("discord said %r", {"Authorization": f"Bot {DISCORD_TOKEN}"}),
        record_with("download failed", exc=RuntimeError(f"GET {url} failed")),
        record_with("gateway", exc=ExceptionGroup("adapters", [OSError(f"token={DISCORD_TOKEN}")])),
        record_with("escaped %s", f"https://x/?t={quote(TELEGRAM_TOKEN, safe='')}"),
        record_with("a malformed call", f"token={TELEGRAM_TOKEN}"),  # more args than placeholders
        record_with("where", stack=f"Stack (most recent call last):\n  url = {url}"),
    ]
    for text in cases:
        assert TELEGRAM_TOKEN not in text and DISCORD_TOKEN not in text, text
        assert quote(TELEGRAM_TOKEN, safe="") not in text, text
        assert "***" in text, text  # the secret was there and was replaced, not lost with the whole message
    assert "short" in record_with("a short word is not a secret: short")


def test_uncaught_exceptions_are_printed_without_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    hook = redacting_excepthook([TELEGRAM_TOKEN])
    try:
        raise ExceptionGroup("startup", [ConnectionError(f"POST http://127.0.0.1:1/bot{TELEGRAM_TOKEN}/getMe")])
    except ExceptionGroup as exc:
        hook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert TELEGRAM_TOKEN not in err and "ConnectionError" in err and "***" in err


@contextlib.contextmanager
def shira_logging() -> Iterator[None]:
    """setup_logging takes over the root logger and sys.excepthook; give them back to pytest afterwards."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook = hook


class Exploding:
    """What an adapter's fetch returns when it has a bug: an object that fails with the token in the error."""

    def __len__(self) -> int:
        raise RuntimeError(f"bad response from https://api.telegram.org/file/bot{TELEGRAM_TOKEN}/voice/1.oga")


async def test_error_replies_and_logs_hold_no_token(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(
        tmp_path / "data",
        tiny_model_dir,
        search={"vocabulary": "none"},
        telegram={"token": TELEGRAM_TOKEN},
        discord={"token": DISCORD_TOKEN},
    )

    async def failing_download() -> bytes:
        raise OSError(f"GET https://api.telegram.org/file/bot{TELEGRAM_TOKEN}/voice/1.oga: 502")

    async def buggy_download() -> bytes:
        return Exploding()  # type: ignore[return-value]

    with shira_logging():
        setup_logging(config, verbose=True)
        async with Engine.open(config, warm_labels=False) as engine:
            replies = []
            for fetch in (failing_download, buggy_download):
                ref = AudioRef("voice.oga", fetch, size=1000)
                for command in (Command.ADD, Command.IDENTIFY):
                    request = Request("telegram", "telegram:1", "telegram:1", command, audio=(ref,))
                    replies.append(await engine.handle(request))
    err = capsys.readouterr().err
    assert [r.kind for r in replies] == [ReplyKind.ERROR] * 4
    assert any(r.error_id for r in replies), "the buggy fetch should reach the internal-error path"
    for reply in replies:
        assert TELEGRAM_TOKEN not in reply.text and "api.telegram.org" not in reply.text, reply.text
    assert TELEGRAM_TOKEN not in err and DISCORD_TOKEN not in err
    assert "***" in err and "Traceback" in err  # the failures were logged, with the token taken out


def run_shira(
    tmp_path: Path, name: str, config: dict[str, dict[str, object]], env: dict[str, str]
) -> subprocess.Popen[str]:
    """Start `python -m bot -v run` (debug logging on) with this config; the caller waits for it."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), **env)
    argv = [sys.executable, "-m", "bot", "-v", "run", "--config", str(path), "--data-dir", str(tmp_path / name)]
    return subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_failed_runs_never_print_a_token(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Telegram (token from the environment) and Discord (token from the config file) against closed ports."""
    model = {"id": str(tiny_model_dir), "precision": "fp32"}
    search = {"vocabulary": "none"}
    port = closed_port()
    telegram = run_shira(
        tmp_path,
        "telegram",
        {
            "model": model,
            "search": search,
            "telegram": {
                "enabled": True,
                "base_url": f"http://127.0.0.1:{port}/bot",
                "base_file_url": f"http://127.0.0.1:{port}/file/bot",
            },
        },
        {"SHIRA_TELEGRAM_TOKEN": TELEGRAM_TOKEN},
    )
    discord = run_shira(
        tmp_path,
        "discord",
        {
            "model": model,
            "search": search,
            "discord": {"enabled": True, "token": DISCORD_TOKEN, "api_base_url": f"http://127.0.0.1:{port}/api/v10"},
        },
        {},
    )
    for proc, token in ((telegram, TELEGRAM_TOKEN), (discord, DISCORD_TOKEN)):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode not in (0, None), "the run was meant to fail"
        assert f"127.0.0.1:{port}" in err or "connect" in err.lower(), err[-3000:]  # it failed reaching the API
        for secret in (token, quote(token, safe="")):
            assert secret not in out and secret not in err, f"token printed:\n{(out + err)[-3000:]}"
