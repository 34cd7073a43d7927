"""`shira run` as a real process, with only Telegram enabled and pointed at the fake Bot API on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.telegram_api import FakeTelegram, group_chat, user
from tests.support.process import STARTUP_SECONDS, shira_run, write_config


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_shira_run_polls_and_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with FakeTelegram(token="987654:process-test-token") as fake:
        config = write_config(
            tmp_path / "shira.toml",
            tmp_path / "data",
            tiny_model_dir,
            "telegram",
            {"base_url": fake.base_url, "base_file_url": fake.base_file_url},
        )
        async with shira_run(config, {"SHIRA_TELEGRAM_TOKEN": fake.token}) as shira:
            await shira.reaches(fake.wait_for("getUpdates", timeout=STARTUP_SECONDS), "polled the fake Bot API")
            assert fake.calls_to("setMyCommands"), shira.output

            chat = group_chat(-100999, "Operators")
            asked = fake.push_message(chat, user(55, "Ops"), "/help@shira_test_bot")
            answered = await fake.wait_for(
                "sendMessage",
                lambda c: (c.params.get("reply_parameters") or {}).get("message_id") == asked["message_id"],
                timeout=60,
            )
            assert answered.params["chat_id"] == chat["id"] and "/search" in answered.params["text"]
        assert shira.returncode == 0, shira.output
        assert "telegram adapter started" in shira.output
        assert fake.token not in shira.output  # never log the token
        assert fake.pending == []  # stopping acknowledged the update, so a restart won't answer it twice
