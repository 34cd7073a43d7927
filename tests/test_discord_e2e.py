"""The real discord.py client and a real Engine (tiny CLAP) against a fake Discord on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
import pytest_asyncio
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord import create
from adapters.discord.adapter import LATE, RESTARTING, DiscordAdapter
from adapters.discord.translate import SLASH, Author, Taken
from core.command_table import Platform, Style, entries
from core.config import Config
from core.engine import Engine
from core.inbox import SqliteInbox
from core.messages import Reply, ReplyKind
from tests.conftest import make_config
from tests.fakes.discord_api import (
    EPHEMERAL_FLAG,
    MANAGE_MESSAGES,
    Call,
    FakeDiscord,
    user_payload,
)
from tests.support.sounds import chirp, encode, noise, tone

pytestmark = pytest.mark.asyncio(loop_scope="module")

IDENTIFY_MENU = "What sound is this?"
OGG_MAGIC = b"OggS"


@dataclass
class World:
    """One fake Discord, one engine and one connected bot, shared by the module's tests."""

    fake: FakeDiscord
    engine: Engine
    config: Config
    adapter: DiscordAdapter
    sounds: dict[str, bytes]
    ann: dict[str, Any]  # may add (has the role), uploads most sounds
    bob: dict[str, Any]  # no role, no moderator rights
    mod: dict[str, Any]  # has Manage Messages

    def roles(self, user: dict[str, Any]) -> tuple[int, ...]:
        return () if user is self.bob else (self.fake.adder_role_id,)

    def permissions(self, user: dict[str, Any]) -> int:
        base = int(self.fake.member_payload(user)["permissions"])
        return base | MANAGE_MESSAGES if user is self.mod else base


@dataclass
class Outcome:
    """The REST calls one interaction caused, ending with the one that carries the answer."""

    calls: list[Call]

    @property
    def callback(self) -> Call:
        return next(c for c in self.calls if c.path.endswith("/callback"))

    @property
    def final(self) -> Call:
        return self.calls[-1]

    @property
    def body(self) -> dict[str, Any]:
        body = self.final.body or {}
        return body["data"] if self.final is self.callback else body

    @property
    def ephemeral(self) -> bool:
        deferred = self.callback.body.get("data") or {}
        return bool(
            int(self.body.get("flags") or 0) & EPHEMERAL_FLAG or int(deferred.get("flags") or 0) & EPHEMERAL_FLAG
        )

    @property
    def embed(self) -> dict[str, Any]:
        (embed,) = self.body["embeds"]
        return embed

    @property
    def content(self) -> str:
        return self.body.get("content") or ""

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.body.get("components") or [] for c in row["components"]]


def _answered(calls: list[Call]) -> bool:
    """True once an interaction got its answer: an immediate message, an edit of the original or a follow-up."""
    for call in calls:
        if call.status == 429:
            continue
        if call.path.endswith("/callback") and call.body.get("type") == 4:
            return True
        if call.method == "PATCH" and call.path.endswith("/messages/@original"):
            return True
        if call.method == "POST" and call.path.startswith("/webhooks/") and "/messages/" not in call.path:
            return True
    return False


async def run(world: World, interaction: dict[str, Any], timeout: float = 60.0) -> Outcome:
    """Dispatch an interaction and wait for its answer."""
    await world.fake.dispatch("INTERACTION_CREATE", interaction)
    await world.fake.wait_until(lambda: _answered(world.fake.interaction_calls(interaction)), timeout)
    return Outcome([c for c in world.fake.interaction_calls(interaction) if c.status != 429])


async def slash(
    world: World, name: str, user: dict[str, Any], options: dict[str, Any] | None = None, **attachments: dict[str, Any]
) -> Outcome:
    """Run a slash command as `user` in the guild."""
    interaction = world.fake.slash(
        name,
        user,
        options,
        attachments=attachments or None,
        roles=world.roles(user),
        permissions=world.permissions(user),
    )
    return await run(world, interaction)


async def add(world: World, user: dict[str, Any], sound: str, description: str = "") -> Outcome:
    """/add one of the world's sounds."""
    data = world.sounds[sound]
    file = world.fake.add_attachment(sound, data, _mime(sound))
    return await slash(world, "add", user, {"description": description} if description else None, file=file)


def _mime(filename: str) -> str:
    return {"ogg": "audio/ogg", "wav": "audio/wav", "mp3": "audio/mpeg"}[filename.rsplit(".", 1)[1]]


def sample_id(outcome: Outcome) -> int:
    """The sample id in an 'Added #n' or 'Already in the library: #n' title."""
    return int(outcome.embed["title"].rsplit("#", 1)[1])


async def sample_count(world: World) -> int:
    """What /stats says about the guild library."""
    outcome = await slash(world, "stats", world.mod)
    fields = {f["name"]: f["value"] for f in outcome.embed["fields"]}
    return int(fields["Samples"])


# a bare client, before the adapter exists


async def test_bare_discord_client_gets_ready_on_the_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord() as fake:
        monkeypatch.setattr(Route, "BASE", fake.api_base_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        client = discord.Client(intents=discord.Intents.default())
        await client.login(fake.token)
        connect = asyncio.create_task(client.connect())
        try:
            await asyncio.wait_for(client.wait_until_ready(), 15)
            assert client.user is not None and client.user.id == fake.app_id
            assert [g.name for g in client.guilds] == ["Fake Guild"]
            assert fake.gateway_queries[0]["encoding"] == "json"
            assert fake.identify_payloads[0]["token"] == fake.token
            assert fake.identify_payloads[0]["intents"] == discord.Intents.default().value
            assert [c.path for c in fake.calls] == ["/users/@me", "/oauth2/applications/@me"]
            assert all(c.headers["Authorization"] == f"Bot {fake.token}" for c in fake.calls)
        finally:
            await client.close()
            await asyncio.wait_for(connect, 10)


# the bot


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("discord-e2e")
    sounds = {
        "tone.ogg": encode(tone(2.0, 440.0), tmp / "tone.ogg").read_bytes(),
        "noise.wav": encode(noise(1.5, seed=1), tmp / "noise.wav").read_bytes(),
        "chirp.mp3": encode(chirp(2.5), tmp / "chirp.mp3").read_bytes(),
        "low.ogg": encode(tone(1.5, 110.0), tmp / "low.ogg").read_bytes(),
        "voice-message.ogg": encode(tone(1.0, 660.0) + noise(1.0, seed=2) * 0.2, tmp / "voice.ogg").read_bytes(),
    }
    async with FakeDiscord() as fake:
        config = make_config(
            tmp / "data",
            tiny_model_dir,
            limits={"requests_per_minute": 0},
            discord=fake.section(add_role=fake.adder_role_name),
        )
        # the first command sync is rate limited: the client must wait and retry
        fake.rate_limit("PUT", rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands", retry_after=0.3)
        async with Engine.open(config) as engine:
            adapter = create(engine, config.discord)
            await adapter.start()
            try:
                yield World(
                    fake,
                    engine,
                    config,
                    adapter,
                    sounds,
                    ann=user_payload(fake.new_id(), "ann"),
                    bob=user_payload(fake.new_id(), "bob"),
                    mod=user_payload(fake.new_id(), "mod"),
                )
            finally:
                await adapter.stop()
    assert Route.BASE == "https://discord.com/api/v10"  # stop() puts discord.py's endpoints back


async def test_commands_are_synced_to_the_dev_guild_after_a_429(world: World) -> None:
    fake = world.fake
    path = rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"
    assert [c.status for c in fake.find("PUT", path)] == [429, 200]
    assert fake.find("PUT", rf"/applications/{fake.app_id}/commands") == []
    (synced,) = fake.find("PUT", path, status=200)
    by_name = {cmd["name"]: cmd for cmd in synced.body}
    slash_names = ("search", "add", "similar", "timeline", "remove", "labels", "stats", "help")
    assert set(by_name) == {*slash_names, IDENTIFY_MENU}
    assert by_name[IDENTIFY_MENU]["type"] == 3
    assert all(by_name[name]["type"] == 1 for name in slash_names)
    # Names, descriptions and option descriptions are the command table's, so help and Discord agree.
    for spec in entries(Platform.DISCORD):
        registered = by_name[spec.name]
        if spec.style is Style.SLASH:
            assert registered["description"] == spec.summary
            options = {o["name"]: o for o in registered.get("options", [])}
            assert [o.name for o in spec.options] == list(options)
            assert all(options[o.name]["description"] == o.description for o in spec.options)
            assert all(bool(options[o.name].get("required")) == o.required for o in spec.options)
    add_options = {o["name"]: o for o in by_name["add"]["options"]}
    assert add_options["file"]["type"] == 11 and add_options["file"]["required"]
    assert add_options["description"]["type"] == 3 and not add_options["description"]["required"]
    assert by_name["similar"]["options"][0]["type"] == 11
    search_options = {o["name"]: o for o in by_name["search"]["options"]}
    assert search_options["query"]["type"] == 3 and search_options["k"]["type"] == 4
    assert world.adapter.client.is_ready()


async def test_add_several_sounds(world: World) -> None:
    before = await sample_count(world)
    added = []
    for sound, description in (
        ("tone.ogg", "a pure sine tone"),
        ("noise.wav", "white noise hiss"),
        ("chirp.mp3", "a rising chirp"),
    ):
        outcome = await add(world, world.ann, sound, description)
        assert outcome.callback.body["type"] == 5  # deferred within the 3 s window, then edited
        assert not outcome.ephemeral
        assert outcome.final.method == "PATCH"
        assert outcome.embed["title"].startswith("Added #")
        assert any(f["name"] == "Duration" for f in outcome.embed["fields"])
        assert outcome.custom_ids == [f"shira:more:{sample_id(outcome)}"]
        added.append(sample_id(outcome))
    assert len(set(added)) == 3
    assert await sample_count(world) == before + 3
    again = await add(world, world.ann, "tone.ogg")
    assert again.embed["title"] == f"Already in the library: #{added[0]}"
    assert await sample_count(world) == before + 3


async def _search(world: World, query: str, k: int) -> tuple[Outcome, dict[str, Any]]:
    interaction = world.fake.slash("search", world.bob, {"query": query, "k": k})
    return await run(world, interaction), interaction


async def test_search_answers_with_embed_file_and_buttons(world: World) -> None:
    await add(world, world.ann, "low.ogg", "a low hum")
    outcome, _ = await _search(world, "sine tone", 2)
    assert outcome.callback.body["type"] == 5 and not outcome.ephemeral
    embed = outcome.embed
    assert embed["title"] == 'Results for "sine tone"'
    lines = [line for line in embed["description"].splitlines() if line.startswith("**")]
    assert len(lines) == 2
    ids = [int(line.split("`#")[1].split("`")[0]) for line in lines]
    (upload,) = outcome.final.files
    assert upload.filename.startswith(f"{ids[0]}-") and upload.filename.endswith(".ogg")
    assert upload.data.startswith(OGG_MAGIC)
    assert outcome.body["attachments"][0]["filename"] == upload.filename
    query_id = next(c for c in outcome.custom_ids if c.startswith("shira:page:")).split(":")[2]
    assert outcome.custom_ids == [
        f"shira:play:{ids[0]}",
        f"shira:play:{ids[1]}",
        f"shira:more:{ids[0]}",
        f"shira:page:{query_id}:1",
    ]


async def test_next_page_button_edits_the_results(world: World) -> None:
    first, interaction = await _search(world, "noise", 2)
    first_ids = [c for c in first.custom_ids if c.startswith("shira:play:")]
    next_page = next(c for c in first.custom_ids if c.startswith("shira:page:"))
    message = world.fake.original(interaction)
    click = world.fake.button_click(next_page, world.mod, message)
    second = await run(world, click)
    assert second.callback.body["type"] == 6  # deferred update: the results message itself changes
    assert second.final.method == "PATCH" and second.final.path.endswith("/@original")
    assert "Page 2" in second.embed["footer"]["text"]
    second_ids = [c for c in second.custom_ids if c.startswith("shira:play:")]
    assert second_ids and not set(second_ids) & set(first_ids)
    query_id = next_page.split(":")[2]
    assert f"shira:page:{query_id}:0" in second.custom_ids
    assert second.final.files == [] and second.body["attachments"] == []  # page 1's preview is gone


async def test_play_and_more_buttons_answer_the_clicker(world: World) -> None:
    outcome, interaction = await _search(world, "chirp", 3)
    play = next(c for c in outcome.custom_ids if c.startswith("shira:play:"))
    message = world.fake.original(interaction)
    played = await run(world, world.fake.button_click(play, world.bob, message))
    assert played.callback.body["type"] == 5 and played.ephemeral
    assert played.embed["title"].startswith(f"#{play.rsplit(':', 1)[1]} ")
    assert played.final.files[0].data.startswith(OGG_MAGIC)
    more = next(c for c in outcome.custom_ids if c.startswith("shira:more:"))
    similar = await run(world, world.fake.button_click(more, world.bob, message))
    assert similar.ephemeral and similar.embed["title"].startswith(f"More like #{more.rsplit(':', 1)[1]}")


async def test_message_command_on_a_voice_message(world: World) -> None:
    fake = world.fake
    voice = fake.add_attachment("voice-message.ogg", world.sounds["voice-message.ogg"], "audio/ogg", voice=True)
    target = fake.user_message(world.bob, attachments=(voice,), voice=True)
    downloads = len(fake.downloads)
    outcome = await run(world, fake.message_command(IDENTIFY_MENU, world.mod, target))
    assert outcome.callback.body["type"] == 5 and not outcome.ephemeral
    embed = outcome.embed
    assert embed["title"] == "What sound is this?"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "%" in fields["Sounds like"]
    assert "`#" in fields["Closest samples"]
    assert outcome.final.files[0].data.startswith(OGG_MAGIC)
    assert any(c.startswith("shira:play:") for c in outcome.custom_ids)
    assert fake.downloads[downloads:] == [yarl.URL(voice["url"]).path]


async def test_message_command_without_audio(world: World) -> None:
    target = world.fake.user_message(world.bob, content="just words")
    outcome = await run(world, world.fake.message_command(IDENTIFY_MENU, world.mod, target))
    assert outcome.callback.body["type"] == 4 and outcome.ephemeral
    assert "no voice message or audio" in outcome.content


async def test_voice_messages_need_a_mention_in_a_guild(world: World) -> None:
    fake = world.fake
    data = world.sounds["voice-message.ogg"]
    posts = rf"/channels/{fake.channel_id}/messages"
    before = len(fake.find("POST", posts))
    ignored = fake.user_message(
        world.bob, attachments=(fake.add_attachment("voice-message.ogg", data, "audio/ogg", voice=True),), voice=True
    )
    addressed = fake.user_message(
        world.bob,
        attachments=(fake.add_attachment("voice-message.ogg", data, "audio/ogg", voice=True),),
        voice=True,
        mention_bot=True,
    )
    await fake.dispatch("MESSAGE_CREATE", ignored)
    await fake.dispatch("MESSAGE_CREATE", addressed)
    replies = await fake.wait_for("POST", posts, count=before + 1)
    await asyncio.sleep(0.5)
    assert len(fake.find("POST", posts)) == before + 1
    reply = replies[-1]
    assert str(reply.body["message_reference"]["message_id"]) == addressed["id"]
    assert reply.body["embeds"][0]["title"] == "What sound is this?"
    assert reply.files[0].data.startswith(OGG_MAGIC)
    assert reply.body["allowed_mentions"]["parse"] == []


async def test_voice_message_in_a_dm(world: World) -> None:
    fake = world.fake
    voice = fake.add_attachment("voice-message.ogg", world.sounds["voice-message.ogg"], "audio/ogg", voice=True)
    dm = fake.user_message(world.bob, attachments=(voice,), voice=True, guild=False)
    await fake.dispatch("MESSAGE_CREATE", dm)
    (reply,) = await fake.wait_for("POST", rf"/channels/{dm['channel_id']}/messages")
    assert reply.body["embeds"][0]["title"] == "What sound is this?"
    fields = {f["name"]: f["value"] for f in reply.body["embeds"][0]["fields"]}
    assert "Closest samples" not in fields  # bob's own DM library is empty; the guild's sounds stay private


async def test_remove_is_for_the_uploader_or_moderators(world: World) -> None:
    ann_sample = sample_id(await add(world, world.ann, "voice-message.ogg", "ann's clip"))
    before = await sample_count(world)

    denied = await slash(world, "remove", world.bob, {"id": str(ann_sample)})
    assert denied.ephemeral and "Only the person who added" in denied.content
    assert await sample_count(world) == before

    removed = await slash(world, "remove", world.mod, {"id": f"#{ann_sample}"})
    assert removed.ephemeral and removed.embed["title"] == "Removed"
    assert await sample_count(world) == before - 1

    own = sample_id(await add(world, world.ann, "voice-message.ogg"))
    mine = await slash(world, "remove", world.ann, {"id": str(own)})
    assert mine.embed["title"] == "Removed"
    assert await sample_count(world) == before - 1


async def test_a_rate_limited_follow_up_is_retried(world: World) -> None:
    fake = world.fake
    interaction = fake.slash("help", world.bob)
    fake.rate_limit("PATCH", rf"/webhooks/{fake.app_id}/{interaction['token']}/messages/@original", retry_after=0.3)
    outcome = await run(world, interaction)
    statuses = [c.status for c in fake.interaction_calls(interaction) if c.method == "PATCH"]
    assert statuses == [429, 200]
    assert outcome.ephemeral and "search" in outcome.embed["description"]


# bad input: a clear ephemeral answer, never a crash, nothing lost


async def test_bad_inputs_get_clear_ephemeral_answers(world: World) -> None:
    fake = world.fake
    before = await sample_count(world)
    downloads = len(fake.downloads)

    image = fake.add_attachment("cat.png", b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")
    outcome = await slash(world, "add", world.ann, file=image)
    assert outcome.callback.body["type"] == 4 and outcome.ephemeral
    assert "doesn't look like audio" in outcome.content
    assert len(fake.downloads) == downloads  # rejected before any download

    huge = fake.add_attachment("huge.wav", b"RIFF", "audio/wav", size=2 * world.config.audio.max_add_bytes)
    outcome = await slash(world, "add", world.ann, file=huge)
    assert outcome.ephemeral and "MB" in outcome.content
    assert len(fake.downloads) == downloads  # the declared size is checked first
    assert fake.find("DELETE", rf"/webhooks/{fake.app_id}/{outcome.callback.path.split('/')[3]}/messages/@original")

    corrupt = fake.add_attachment("broken.ogg", b"OggS" + bytes(range(256)) * 8, "audio/ogg")
    outcome = await slash(world, "add", world.ann, file=corrupt)
    assert outcome.ephemeral and outcome.content
    assert "sorry" not in outcome.content.lower()  # a user error, not an apology

    expired = fake.add_attachment("gone.ogg", world.sounds["tone.ogg"], "audio/ogg", missing=True)
    outcome = await slash(world, "similar", world.bob, file=expired)
    assert outcome.ephemeral and "download" in outcome.content

    outcome = await slash(world, "remove", world.mod, {"id": "999999"})
    assert outcome.ephemeral and "no sound #999999" in outcome.content

    outcome = await slash(
        world, "add", world.bob, file=fake.add_attachment("x.ogg", world.sounds["tone.ogg"], "audio/ogg")
    )
    assert outcome.callback.body["type"] == 4 and outcome.ephemeral
    assert fake.adder_role_name in outcome.content

    outcome = await slash(world, "search", world.bob, {"query": "   "})
    assert outcome.ephemeral

    assert await sample_count(world) == before
    connect = world.adapter._connect_task
    assert connect is not None and not connect.done()
    assert world.adapter.client.is_ready()
    outcome, _ = await _search(world, "tone", 1)
    assert outcome.embed["description"].count("`#") == 1


async def test_preview_follows_the_interactions_upload_limit(world: World) -> None:
    interaction = world.fake.slash("search", world.bob, {"query": "tone", "k": 1}, size_limit=100)
    outcome = await run(world, interaction)
    assert outcome.final.files == []  # no preview fits 100 bytes: the results still come, without it
    assert outcome.embed["description"].count("`#") == 1
    assert outcome.custom_ids[0].startswith("shira:play:")


async def test_a_dm_is_a_personal_library(world: World) -> None:
    fake = world.fake
    guild_before = await sample_count(world)
    file = fake.add_attachment("chirp.mp3", world.sounds["chirp.mp3"], "audio/mpeg")
    interaction = fake.slash("add", world.bob, attachments={"file": file}, guild=False)  # no role needed in a DM
    added = await run(world, interaction)
    assert added.embed["title"].startswith("Added #")
    stats = await run(world, fake.slash("stats", world.bob, guild=False))
    assert {f["name"]: f["value"] for f in stats.embed["fields"]}["Samples"] == "1"
    assert await sample_count(world) == guild_before


async def test_send_delivers_unprompted_replies(world: World) -> None:
    fake = world.fake
    bob = int(world.bob["id"])
    dm_posts = rf"/channels/{fake.dm_channel_id(bob)}/messages"
    before = len(fake.find("POST", dm_posts))
    await world.adapter.send(f"discord:dm:{bob}", Reply(ReplyKind.TEXT, "your import finished"))
    (opened,) = await fake.wait_for("POST", "/users/@me/channels")
    assert opened.body == {"recipient_id": bob}
    dm = (await fake.wait_for("POST", dm_posts, count=before + 1))[-1]
    assert dm.body["content"] == "your import finished"

    posts = rf"/channels/{fake.channel_id}/messages"
    before = len(fake.find("POST", posts))
    await world.adapter.send(f"discord:guild:{fake.guild_id}", Reply(ReplyKind.TEXT, "shira finds *sounds*"))
    sent = await fake.wait_for("POST", posts, count=before + 1)
    assert sent[-1].body["content"] == "shira finds \\*sounds\\*"
    await world.adapter.send("discord:guild:1", Reply(ReplyKind.TEXT, "nobody hears this"))  # unknown: dropped
    assert len(fake.find("POST", posts)) == before + 1


async def test_a_wrong_token_fails_start_cleanly(world: World) -> None:
    config = dataclasses.replace(world.config.discord, token="not-the-token")
    stranger = create(world.engine, config)
    with pytest.raises(discord.LoginFailure):
        await stranger.start()
    assert world.fake.api_base_url == Route.BASE  # the running bot's endpoints are untouched
    outcome = await slash(world, "help", world.bob)
    assert "search" in outcome.embed["description"]


async def test_an_exact_match_leads_the_answer_to_a_voice_message(world: World, tmp_path: Path) -> None:
    from tests.test_identify import melody

    fake = world.fake
    song = encode(melody(8.0, seed=21), tmp_path / "riff.wav").read_bytes()
    added = await slash(world, "add", world.ann, file=fake.add_attachment("riff.wav", song, "audio/wav"))
    riff = sample_id(added)
    excerpt = encode(melody(8.0, seed=21)[3 * 48_000 : 6 * 48_000], tmp_path / "clip.ogg", "ogg").read_bytes()
    posts = rf"/channels/{fake.channel_id}/messages"
    before = len(fake.find("POST", posts))
    voice = fake.add_attachment("voice-message.ogg", excerpt, "audio/ogg", voice=True)
    await fake.dispatch(
        "MESSAGE_CREATE", fake.user_message(world.bob, attachments=(voice,), voice=True, mention_bot=True)
    )
    reply = (await fake.wait_for("POST", posts, count=before + 1))[-1]
    embed = reply.body["embeds"][0]
    assert embed["description"].startswith(f"That's #{riff} riff.wav, from 0:03"), embed
    assert [f["name"] for f in embed["fields"]][:2] == ["Sounds like", "Closest samples"]


# the inbox


def inbox_states(world: World) -> dict[str, str]:
    """key -> state of every journaled Discord request."""
    with contextlib.closing(sqlite3.connect(Path(world.config.data_dir) / "shira.db")) as db:
        return dict(db.execute("SELECT key, state FROM inbox WHERE platform = 'discord'").fetchall())


def age(world: World, key: str, seconds: float) -> None:
    """Make a journaled request look `seconds` older."""
    with contextlib.closing(sqlite3.connect(Path(world.config.data_dir) / "shira.db")) as db, db:
        db.execute("UPDATE inbox SET received_at = received_at - ? WHERE key = ?", (seconds, key))


@contextlib.asynccontextmanager
async def bot_on(
    world: World, fake: FakeDiscord, inbox: SqliteInbox, drain: float = 10.0
) -> AsyncIterator[DiscordAdapter]:
    """A second bot, on its own fake Discord, with the engine's inbox; drained and stopped on the way out."""
    config = dataclasses.replace(
        world.config.discord,
        token=fake.token,
        api_base_url=fake.api_base_url,
        gateway_url=fake.gateway_url,
        dev_guild=fake.guild_id,
        add_role="",
    )
    adapter = create(world.engine, config, inbox=inbox)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.drain(drain)
        await adapter.stop()


def patches(fake: FakeDiscord, interaction: dict[str, Any]) -> list[Call]:
    return [c for c in fake.interaction_calls(interaction) if c.method == "PATCH" and c.status == 200]


async def test_a_restart_answers_what_the_inbox_kept_while_it_can(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sounds = world.sounds | {"tone.ogg": encode(tone(1.2, 523.0), tmp_path / "c5.ogg").read_bytes()}  # new here
    async with (
        FakeDiscord(token="inbox-token-1234") as fake,
        SqliteInbox.open(Path(world.config.data_dir) / "shira.db") as inbox,
    ):
        ann = user_payload(fake.new_id(), "ann")
        held = [fake.hold_download(name) for name in ("kept.ogg", "expired.wav", "voice-kept.ogg")]
        added = fake.slash(
            "add", ann, attachments={"file": fake.add_attachment("kept.ogg", sounds["tone.ogg"], "audio/ogg")}
        )
        similar = fake.slash(
            "similar", ann, attachments={"file": fake.add_attachment("expired.wav", sounds["noise.wav"], "audio/wav")}
        )
        voice = fake.add_attachment("voice-kept.ogg", sounds["voice-message.ogg"], "audio/ogg", voice=True)
        message = fake.user_message(ann, attachments=(voice,), voice=True, mention_bot=True)
        async with bot_on(world, fake, inbox, drain=0):
            for event, data in (
                ("INTERACTION_CREATE", added),
                ("INTERACTION_CREATE", similar),
                ("MESSAGE_CREATE", message),
            ):
                await fake.dispatch(event, data)
            await fake.wait_until(lambda: len(fake.downloads) == 3)
        # That run stopped while it was downloading all three: each was acknowledged, none answered.
        keys = (added["id"], similar["id"], message["id"])
        assert {key: inbox_states(world)[key] for key in keys} == dict.fromkeys(keys, "pending")
        age(world, similar["id"], 20 * 60)  # past its token's 15 minutes
        # And one that a kill stopped between its journal and its deferral: Discord never heard of it.
        unheard = fake.slash("stats", ann)
        taken = Taken(SLASH, Author(int(ann["id"]), "ann"), 1000, name="stats", application_id=fake.app_id)
        await inbox.record("discord", {unheard["id"]: dataclasses.replace(taken, token=unheard["token"]).to_json()})
        for release in held:
            release.set()
        with caplog.at_level(logging.WARNING, logger="adapters.discord"):
            async with bot_on(world, fake, inbox):
                (edited,) = await fake.wait_for(
                    "PATCH", rf"/webhooks/{fake.app_id}/{added['token']}/messages/@original"
                )
                (replied,) = await fake.wait_for("POST", rf"/channels/{fake.channel_id}/messages")
        assert edited.body["content"] == LATE and edited.body["embeds"][0]["title"].startswith("Added #")
        assert replied.body["content"] == LATE and str(replied.body["message_reference"]["message_id"]) == message["id"]
        assert replied.body["embeds"][0]["title"] == "What sound is this?"
        assert [c.path.rsplit("/", 1)[1] for c in fake.interaction_calls(similar)] == ["callback"]  # the defer only
        assert f"slash {similar['id']} is 20 min old and its token has expired; dropping it" in caplog.text
        assert [(c.method, c.status) for c in fake.interaction_calls(unheard)] == [("GET", 404)]  # looked, no answer
        assert f"interaction {unheard['id']} was journaled but never acknowledged; dropping it" in caplog.text
        assert all(i["token"] not in caplog.text for i in (added, similar, unheard))
    keys += (unheard["id"],)
    assert {key: inbox_states(world)[key] for key in keys} == dict.fromkeys(keys, "done")


async def test_while_draining_new_interactions_hear_restarting(world: World, tmp_path: Path) -> None:
    async with (
        FakeDiscord(token="inbox-token-5678") as fake,
        SqliteInbox.open(Path(world.config.data_dir) / "shira.db") as inbox,
    ):
        ann = user_payload(fake.new_id(), "ann")
        release = fake.hold_download("draining.ogg")
        added = fake.slash(
            "add",
            ann,
            attachments={
                "file": fake.add_attachment(
                    "draining.ogg", encode(tone(1.1, 587.0), tmp_path / "d5.ogg").read_bytes(), "audio/ogg"
                )
            },
        )
        async with bot_on(world, fake, inbox) as adapter:
            await fake.dispatch("INTERACTION_CREATE", added)
            await fake.wait_until(lambda: len(fake.downloads) == 1)
            draining = asyncio.create_task(adapter.drain(10))
            late_comer = fake.slash("help", ann)
            await fake.dispatch("INTERACTION_CREATE", late_comer)
            (told,) = await fake.wait_for("POST", rf"/interactions/{late_comer['id']}/{late_comer['token']}/callback")
            release.set()
            await draining
        assert told.body["type"] == 4 and told.body["data"]["flags"] == EPHEMERAL_FLAG
        assert RESTARTING in told.body["data"]["content"]
        (edited,) = patches(fake, added)
        assert edited.body["embeds"][0]["title"].startswith("Added #") and not edited.body.get("content")
    assert inbox_states(world)[added["id"]] == "done" and late_comer["id"] not in inbox_states(world)
