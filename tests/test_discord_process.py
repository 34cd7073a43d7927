"""`shira run` as a real process, with only Discord enabled and pointed at a fake Discord on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.discord_api import FakeDiscord, user_payload
from tests.support.process import shira_run, write_config


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_shira_run_connects_syncs_and_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with FakeDiscord(token="process-test-token-123") as fake:
        config = write_config(
            tmp_path / "shira.toml",
            tmp_path / "data",
            tiny_model_dir,
            "discord",
            fake.endpoints(),
        )
        async with shira_run(config, {"SHIRA_DISCORD_TOKEN": fake.token}) as shira:
            await shira.reaches(fake.identified.wait(), "reached the gateway")

            (synced,) = await fake.wait_for("PUT", rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands")
            assert {"search", "add", "What sound is this?"} <= {cmd["name"] for cmd in synced.body}

            interaction = fake.slash("help", user_payload(fake.new_id(), "zed"))
            await fake.dispatch("INTERACTION_CREATE", interaction)
            token = interaction["token"]
            (edited,) = await fake.wait_for("PATCH", rf"/webhooks/{fake.app_id}/{token}/messages/@original", timeout=60)
            assert "search" in edited.body["embeds"][0]["description"]
        assert shira.returncode == 0, shira.output
        assert "discord adapter started" in shira.output
        assert fake.token not in shira.output  # never log the token
