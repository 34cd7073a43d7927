"""Sharding: two adapters, each running one of the bot's two shards, split the guilds between them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adapters.discord import create
from adapters.discord.adapter import DiscordAdapter
from core.config import ConfigError
from core.engine import Engine
from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord, user_payload


async def test_each_shard_gets_only_its_guilds_and_an_interaction_is_answered_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with FakeDiscord() as fake:
        config = make_config(tmp_path, tiny_model_dir, discord=fake.section(shard_count=2))
        async with Engine.open(config, model=False) as engine:
            adapters: list[DiscordAdapter] = []
            try:
                for shard in (0, 1):
                    adapter = create(engine, dataclasses.replace(config.discord, shard_ids=(shard,)))
                    await adapter.start()
                    adapters.append(adapter)
                assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, 2], [1, 2]]
                owner = (fake.guild_id >> 22) % 2
                assert [len(a.client.guilds) for a in adapters] == [int(owner == 0), int(owner == 1)]
                interaction = fake.slash("help", user_payload(fake.new_id(), "ann"))
                await fake.dispatch("INTERACTION_CREATE", interaction)
                await fake.wait_until(lambda: bool(fake.interaction_calls(interaction)))
                callbacks = [c for c in fake.interaction_calls(interaction) if c.path.endswith("/callback")]
                assert len(callbacks) == 1
            finally:
                for adapter in reversed(adapters):
                    await adapter.stop()


@pytest.mark.parametrize(
    ("keys", "message"),
    [({"shard_ids": (1,)}, "needs shard_count"), ({"shard_count": 2, "shard_ids": (0, 2)}, "below shard_count 2")],
)
async def test_inconsistent_shard_settings_are_refused(
    tmp_path: Path, tiny_model_dir: Path, keys: dict[str, object], message: str
) -> None:
    fake = FakeDiscord()
    config = make_config(tmp_path, tiny_model_dir, discord=fake.section(**keys))
    async with Engine.open(config, model=False) as engine:
        with pytest.raises(ConfigError, match=message):
            create(engine, config.discord)
