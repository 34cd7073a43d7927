"""The chat experience on Discord (issue #11), through the real discord.py client and the fake Discord."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.discord import create
from adapters.discord.adapter import DiscordAdapter
from core.command_table import Platform, Style, entries
from core.config import Config
from core.engine import Engine
from tests.conftest import make_config
from tests.fakes.discord_api import EVERYDAY_PERMISSIONS, MANAGE_MESSAGES, FakeDiscord, user_payload
from tests.support.sounds import chirp, encode, noise, tone
from tests.test_discord_e2e import Outcome, run

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_GUILD = 1 << 5
# A file name keeps only its last path part, so links come in through a search's words.
HOSTILE_NAME = "*b* _i_ ~~s~~ ||x|| > `c` <@&1> @everyone [a](evil.example).ogg"
HOSTILE_QUERY = "[click](https://evil.example) **now** @here"
SPECIAL = re.compile(r"(?<!\\)[*_~|`>\[\]()<]")  # formatting Discord would apply: not preceded by a backslash


def shown_as_typed(markdown: str) -> str:
    """What Discord displays for escaped text: escapes and the zero-width space after @ removed."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("@\u200b", "@")


@dataclass
class Guild:
    fake: FakeDiscord
    engine: Engine
    config: Config
    adapter: DiscordAdapter
    sounds: list[bytes]
    ann: dict[str, Any]

    async def slash(
        self, name: str, options: dict[str, Any] | None = None, user: dict[str, Any] | None = None, **kw: Any
    ) -> Outcome:
        return await run(self, self.fake.slash(name, user or self.ann, options, **kw))  # type: ignore[arg-type]

    async def add(self, index: int, name: str, **kw: Any) -> Outcome:
        file = self.fake.add_attachment(name, self.sounds[index], "audio/ogg")
        return await self.slash("add", attachments={"file": file}, **kw)


async def open_guild(tmp: Path, model_dir: Path, fake: FakeDiscord, sounds: list[bytes]) -> AsyncIterator[Guild]:
    config = make_config(
        tmp / "data",
        model_dir,
        search={"k": 2},
        discord=fake.section(admin_role=fake.adder_role_name),
    )
    async with Engine.open(config) as engine:
        adapter = create(engine, config.discord)
        await adapter.start()
        try:
            yield Guild(fake, engine, config, adapter, sounds, user_payload(fake.new_id(), "ann"))
        finally:
            await adapter.stop()


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    d = tmp_path_factory.mktemp("discord-chat-sounds")
    clips = [tone(1.0, 250.0 + 80 * i) for i in range(4)] + [chirp(1.5), noise(1.0, seed=4)]
    return [encode(c, d / f"s{i}.ogg").read_bytes() for i, c in enumerate(clips)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guild(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, sounds: list[bytes]
) -> AsyncIterator[Guild]:
    async with FakeDiscord() as fake:
        async for opened in open_guild(tmp_path_factory.mktemp("discord-chat"), tiny_model_dir, fake, sounds):
            yield opened


def lines_of(outcome: Outcome) -> list[str]:
    return [line for line in outcome.embed["description"].splitlines() if line.startswith("**")]


def labels_of(outcome: Outcome) -> list[str]:
    return [c["label"] for row in outcome.body.get("components") or [] for c in row["components"]]


# help and welcome


async def test_help_lists_only_what_exists_on_discord(guild: Guild) -> None:
    helped = (await guild.slash("help")).embed
    listed = re.findall(r"^`(/\w+|Apps → [^`]+)", helped["description"], re.MULTILINE)
    assert listed == [e.line(Platform.DISCORD).split(" ")[0] if e.style is Style.SLASH else e.line("discord")
                      for e in entries(Platform.DISCORD)]  # fmt: skip
    assert "/labels" in listed and "Apps → What sound is this?" in listed
    assert not {"/play", "/more", "/next", "/identify"} & set(listed)  # Telegram's and the console's, not Discord's
    assert "PATH" not in helped["description"] and "/search rain" in helped["footer"]["text"]


async def test_joining_a_server_says_hello_in_its_system_channel(guild: Guild) -> None:
    fake = guild.fake
    payload, channel = fake.new_guild()
    await fake.dispatch("GUILD_CREATE", payload)
    (hello,) = await fake.wait_for("POST", rf"/channels/{channel}/messages")
    embed = hello.body["embeds"][0]
    assert embed["title"] == "Hi! I'm shira" and "/search rain" in embed["description"]


# numbering


async def test_the_second_page_is_numbered_on_from_the_first(guild: Guild) -> None:
    for i in range(4):
        await guild.add(i, f"tone {i}.ogg", user=guild.ann)
    first_interaction = guild.fake.slash("search", guild.ann, {"query": "tone", "k": 2})
    first = await run(guild, first_interaction)  # type: ignore[arg-type]
    assert [line.split(".**")[0] for line in lines_of(first)] == ["**1", "**2"]
    assert labels_of(first)[:2] == ["▶ 1", "▶ 2"]
    next_page = next(c for c in first.custom_ids if c.startswith("shira:page:"))
    click = guild.fake.button_click(next_page, guild.ann, guild.fake.original(first_interaction))
    second = await run(guild, click)  # type: ignore[arg-type]
    assert [line.split(".**")[0] for line in lines_of(second)] == ["**3", "**4"]
    assert labels_of(second)[:2] == ["▶ 3", "▶ 4"]
    assert second.embed["title"] == 'Results for "tone"' and "Page 2" in second.embed["footer"]["text"]


# escaping


async def test_user_supplied_names_and_words_are_escaped(guild: Guild) -> None:
    added = await guild.add(4, HOSTILE_NAME, options={"description": "hostile"})
    name = {f["name"]: f["value"] for f in added.embed["fields"]}["Name"]
    assert shown_as_typed(name) == HOSTILE_NAME and not SPECIAL.search(name) and "@everyone" not in name
    found = await guild.slash("search", {"query": HOSTILE_QUERY, "k": 5})
    title = found.embed["title"]
    assert shown_as_typed(title) == f'Results for "{HOSTILE_QUERY}"'
    assert not SPECIAL.search(title) and "https://" not in title and "@here" not in title
    line = next(line for line in lines_of(found) if "||" in line or "\\|\\|" in line)
    found_name = re.search(r"`#\d+` \*\*(.*)\*\* — ", line)  # the name between the bold markers
    assert found_name, line
    shown = found_name.group(1)
    assert shown_as_typed(shown) == HOSTILE_NAME and not SPECIAL.search(shown)


# community controls


async def test_labels_are_changed_by_manage_server_or_the_admin_role(guild: Guild) -> None:
    fake = guild.fake
    member = await guild.slash("labels", {"action": "add", "label": "siren"})
    assert member.ephemeral and "Only an admin" in member.content
    moderator = await guild.slash(
        "labels", {"action": "add", "label": "siren"}, permissions=EVERYDAY_PERMISSIONS | MANAGE_MESSAGES
    )
    assert "Only an admin" in moderator.content  # moderating sounds is not changing the library's settings
    owner = user_payload(fake.new_id(), "owner")
    by_owner = await guild.slash(
        "labels", {"action": "add", "label": "siren"}, owner, permissions=EVERYDAY_PERMISSIONS | MANAGE_GUILD
    )
    assert by_owner.content == 'Added the label "siren" to this library.'
    roled = user_payload(fake.new_id(), "roled")
    by_role = await guild.slash("labels", {"action": "add", "label": "door slam"}, roled, roles=(fake.adder_role_id,))
    assert by_role.content == 'Added the label "door slam" to this library.'
    listed = await guild.slash("labels")
    assert listed.content == "This library's labels: door slam, siren"
    stats = {f["name"]: f["value"] for f in (await guild.slash("stats")).embed["fields"]}
    assert stats["Own labels"] == "2"


# restarts


async def test_page_buttons_outlive_a_restart(tiny_model_dir: Path, tmp_path: Path, sounds: list[bytes]) -> None:
    async with FakeDiscord() as fake:
        opened = open_guild(tmp_path, tiny_model_dir, fake, sounds)
        first = await anext(opened)
        for i in range(3):
            await first.add(i, f"hum {i}.ogg")
        interaction = fake.slash("search", first.ann, {"query": "hum", "k": 2})
        results = await run(first, interaction)  # type: ignore[arg-type]
        next_page = next(c for c in results.custom_ids if c.startswith("shira:page:"))
        message = fake.original(interaction)
        await opened.aclose()  # the process ends: nothing of the search is left in memory

        again = open_guild(tmp_path, tiny_model_dir, fake, sounds)
        second = await anext(again)
        try:
            page = await run(second, fake.button_click(next_page, second.ann, message))  # type: ignore[arg-type]
        finally:
            await again.aclose()
    assert not page.ephemeral and "Page 2" in page.embed["footer"]["text"], page.content
    assert [line.split(".**")[0] for line in lines_of(page)] == ["**3"]
