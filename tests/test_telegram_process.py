"""`shira run` as a real process, with only Telegram enabled and pointed at the fake Bot API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.fakes.telegram_api import FakeTelegram, group_chat, user

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 180.0


def write_config(path: Path, fake: FakeTelegram, data_dir: Path, model_dir: Path) -> Path:
    """A TOML config that enables only Telegram; the token comes from SHIRA_TELEGRAM_TOKEN."""
    path.write_text(
        f"""
data_dir = "{data_dir.as_posix()}"
log_level = "INFO"

[model]
id = "{model_dir.as_posix()}"
precision = "fp32"

[telegram]
enabled = true
base_url = "{fake.base_url}"
base_file_url = "{fake.base_file_url}"
""",
        encoding="utf-8",
    )
    return path


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


async def test_shira_run_polls_and_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with FakeTelegram(token="987654:process-test-token") as fake:
        config = write_config(tmp_path / "shira.toml", fake, tmp_path / "data", tiny_model_dir)
        env = os.environ | {
            "SHIRA_TELEGRAM_TOKEN": fake.token,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("SHIRA_DISCORD_TOKEN", None)
        # `python -m bot run ...` is `shira run ...` (bot.cli:main) without needing an installed entry point
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            "--config",
            str(config),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        readers = [asyncio.create_task(_drain(proc.stdout, lines)), asyncio.create_task(_drain(proc.stderr, lines))]
        try:
            exited = asyncio.create_task(proc.wait())
            polling = asyncio.create_task(fake.wait_for("getUpdates", timeout=STARTUP_SECONDS))
            done, _ = await asyncio.wait(
                {exited, polling}, timeout=STARTUP_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            assert polling in done, "shira run never polled the fake Bot API:\n" + "".join(lines)
            exited.cancel()
            assert fake.calls_to("setMyCommands"), "".join(lines)

            chat = group_chat(-100999, "Operators")
            asked = fake.push_message(chat, user(55, "Ops"), "/help@shira_test_bot")
            answered = await fake.wait_for(
                "sendMessage",
                lambda c: (c.params.get("reply_parameters") or {}).get("message_id") == asked["message_id"],
                timeout=60,
            )
            assert answered.params["chat_id"] == chat["id"] and "/search" in answered.params["text"]
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(proc.wait(), 60)
            await asyncio.gather(*readers)
        output = "".join(lines)
        assert returncode == 0, output
        assert "telegram adapter started" in output
        assert fake.token not in output  # never log the token
        assert fake.pending == []  # stopping acknowledged the update, so a restart won't answer it twice
