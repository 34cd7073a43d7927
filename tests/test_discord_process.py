"""`shira run` as a real process, with only Discord enabled and pointed at a fake Discord on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord, user_payload

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 180.0


def write_config(path: Path, fake: FakeDiscord, data_dir: Path, model_dir: Path) -> Path:
    """A TOML config that enables only the Discord adapter; the token comes from the environment."""
    path.write_text(
        f"""
data_dir = "{data_dir.as_posix()}"
log_level = "INFO"

[model]
id = "{model_dir.as_posix()}"
precision = "fp32"

[discord]
enabled = true
api_base_url = "{fake.api_base_url}"
gateway_url = "{fake.gateway_url}"
dev_guild = {fake.guild_id}
""",
        encoding="utf-8",
    )
    return path


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


async def test_shira_run_connects_syncs_and_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with FakeDiscord(token="process-test-token-123") as fake:
        config = write_config(tmp_path / "shira.toml", fake, tmp_path / "data", tiny_model_dir)
        env = os.environ | {
            "SHIRA_DISCORD_TOKEN": fake.token,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("SHIRA_TELEGRAM_TOKEN", None)
        # `python -m bot` is the `shira` console script (bot.cli:main) without needing an installed entry point
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--config",
            str(config),
            "run",
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
            identified = asyncio.create_task(fake.identified.wait())
            done, _ = await asyncio.wait(
                {exited, identified}, timeout=STARTUP_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            assert identified in done, "shira run never reached the gateway:\n" + "".join(lines)
            exited.cancel()

            (synced,) = await fake.wait_for("PUT", rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands")
            assert {"search", "add", "What sound is this?"} <= {cmd["name"] for cmd in synced.body}

            interaction = fake.slash("help", user_payload(fake.new_id(), "zed"))
            await fake.dispatch("INTERACTION_CREATE", interaction)
            token = interaction["token"]
            (edited,) = await fake.wait_for("PATCH", rf"/webhooks/{fake.app_id}/{token}/messages/@original", timeout=60)
            assert "search" in edited.body["embeds"][0]["description"]
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(proc.wait(), 60)
            await asyncio.gather(*readers)
        output = "".join(lines)
        assert returncode == 0, output
        assert "discord adapter started" in output
        assert fake.token not in output  # never log the token
