"""The Discord adapter: a discord.py client with slash commands, a message command and voice messages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.config import DiscordConfig
from adapters.discord.render import BUTTON_ID_PATTERN, Button, Rendered, error, render
from adapters.discord.translate import (
    DEFAULT_UPLOAD_LIMIT,
    Attachment,
    Author,
    Place,
    button_request,
    identify_request,
    is_audio,
    may_add,
    not_audio_message,
    slash_request,
    wants_message,
)
from core.errors import UserError
from core.messages import Command, Door, Reply, ReplyKind, Request

log = logging.getLogger(__name__)

IDENTIFY_MENU = "What sound is this?"
DOWNLOAD_TIMEOUT = 60.0
SORRY = "Sorry, something went wrong on my side. Please try again."


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=BUTTON_ID_PATTERN):
    """A result button whose custom id carries everything needed, so it keeps working after restarts."""

    def __init__(self, spec: Button) -> None:
        super().__init__(
            discord.ui.Button(label=spec.label, custom_id=spec.custom_id, style=discord.ButtonStyle(spec.style))
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> ResultButton:
        """Rebuild the button from a clicked message."""
        button: discord.ui.Button = item  # type: ignore[assignment]
        return cls(Button(button.label or "", button.custom_id or "", button.style.value))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the click to the adapter."""
        client = interaction.client
        if isinstance(client, ShiraClient):
            await client.adapter.on_button(interaction, self.item.custom_id or "")


class ShiraClient(discord.Client):
    """A discord.Client that knows its adapter and routes events to it."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True  # no message-content intent: mentions and DMs still carry attachments
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.adapter = adapter
        self.tree = app_commands.CommandTree(
            self,
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )

    async def setup_hook(self) -> None:
        """Register persistent buttons and sync the commands (runs inside login)."""
        self.add_dynamic_items(ResultButton)
        await self.adapter.sync_commands()

    async def on_message(self, message: discord.Message) -> None:
        """Voice messages and audio files addressed to the bot."""
        await self.adapter.on_message(message)

    async def on_ready(self) -> None:
        """The gateway session is up (after IDENTIFY)."""
        self.adapter.connected(True)

    async def on_resumed(self) -> None:
        """The gateway session is back (after RESUME)."""
        self.adapter.connected(True)

    async def on_disconnect(self) -> None:
        """The gateway connection was lost; discord.py reconnects by itself unless the close was final."""
        self.adapter.connected(False)


def author_of(user: discord.abc.User, guild_id: int | None, permissions: int) -> Author:
    """An Author from a discord.py user or member."""
    roles = [r for r in getattr(user, "roles", []) if not r.is_default()]
    return Author(
        user_id=user.id,
        name=user.display_name,
        guild_id=guild_id,
        permissions=permissions,
        role_ids=tuple(r.id for r in roles),
        role_names=tuple(r.name for r in roles),
    )


def attachment_of(attachment: discord.Attachment) -> Attachment:
    """An Attachment from a discord.py attachment."""
    return Attachment(
        attachment.filename, attachment.url, attachment.size, attachment.content_type, attachment.duration
    )


def interaction_author(interaction: discord.Interaction) -> Author:
    """Who clicked or typed, with their channel permissions."""
    return author_of(interaction.user, interaction.guild_id, interaction.permissions.value)


def upload_limit(interaction: discord.Interaction) -> int:
    """Bytes we may attach to an answer: Discord's attachment_size_limit when given, else 10 MiB."""
    return getattr(interaction, "filesize_limit", None) or DEFAULT_UPLOAD_LIMIT


class DiscordAdapter:
    """Translates Discord events into core requests and renders the replies."""

    name = "discord"

    def __init__(
        self, door: Door, config: DiscordConfig, global_space: str = "global", ready_timeout: float = 60.0
    ) -> None:
        self.door = door
        self.config = config
        self._global_space = global_space
        self.ready_timeout = ready_timeout
        self.client = ShiraClient(self)
        self._connect_task: asyncio.Task[None] | None = None
        self._saved_endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        self._register_commands()
        self._serving = False
        self._down_since: float | None = time.monotonic()  # until the first READY

    @property
    def global_space(self) -> str | None:
        """The shared library searched as well, when enabled."""
        return self._global_space if self.config.global_library else None

    # lifespan

    async def start(self) -> None:
        """Log in, sync commands, connect in a background task and return once the gateway is ready.

        discord.py reads its REST base and gateway URL from class attributes, so they are process-wide:
        they are set here and put back by stop().
        """
        if not self.config.token:
            raise ValueError("the Discord adapter needs a token: set SHIRA_DISCORD_TOKEN")
        Route.BASE = self.config.api_base_url.rstrip("/")
        if self.config.gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        try:
            await self.client.login(self.config.token)
            self._connect_task = asyncio.create_task(self.client.connect(), name="discord-gateway")
            await self._wait_until_ready(self._connect_task)
        except BaseException:
            await self.stop()
            raise
        self._serving = True
        log.info("Discord adapter ready as %s in %d guild(s)", self.client.user, len(self.client.guilds))

    def connected(self, up: bool) -> None:
        """Note the gateway session going up or down."""
        if up:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()

    def problem(self) -> str | None:
        """Why events aren't arriving: the gateway task ended, or the connection is down; None when connected."""
        if not self._serving:
            return None
        task = self._connect_task
        if task is None or task.done():
            return f"the gateway connection ended{_why(task)}"
        if self._down_since is not None:
            return f"disconnected from the gateway for {time.monotonic() - self._down_since:.0f} s"
        return None

    async def revive(self) -> None:
        """Connect again if the gateway task has ended; while discord.py is reconnecting by itself, leave it be.

        discord.py closes the client after a close code it won't retry (4004 and the like); a closed client can't
        log in again, so a new one is made.
        """
        task = self._connect_task
        if not self._serving or (task is not None and not task.done()):
            return
        log.warning("Discord: connecting to the gateway again (%s)", self.problem())
        if self.client.is_closed():
            self.client = ShiraClient(self)
            self._register_commands()
            await self.client.login(self.config.token)
        elif self.client.ws is not None:  # the task was cancelled under it: close the old socket and its heartbeat
            with contextlib.suppress(Exception):
                await self.client.ws.close(code=4000)
        self.connected(False)
        self._connect_task = asyncio.create_task(self.client.connect(), name="discord-gateway")

    async def _wait_until_ready(self, connect: asyncio.Task[None]) -> None:
        """Return once ready; raise if the gateway gives up first; after ready_timeout, go on in the background."""
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait({ready, connect}, timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return
        ready.cancel()
        if connect in done:
            connect.result()  # raises why the gateway gave up
            raise RuntimeError("the Discord gateway closed before the bot was ready")
        log.warning("Discord gateway not ready after %.0f s; still trying in the background", self.ready_timeout)

    async def stop(self) -> None:
        """Close the gateway and HTTP session, and put discord.py's endpoints back."""
        self._serving = False
        await self.client.close()
        if self._connect_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._connect_task, 10)
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints

    async def send(self, space: str, reply: Reply) -> None:
        """Deliver a reply unprompted: to a user's DMs, or to a guild's system channel."""
        kind, _, key = space.removeprefix("discord:").partition(":")
        target: discord.abc.Messageable | None = None
        if kind == "dm" and key.isdigit():
            target = await self.client.create_dm(discord.Object(int(key)))
        elif kind == "guild" and key.isdigit() and (guild := self.client.get_guild(int(key))) is not None:
            target = guild.system_channel
        if target is None:
            log.warning("no Discord channel to send to for space %s", space)
            return
        rendered = render(reply)
        file = self._preview(rendered)
        await target.send(**self._message_kwargs(rendered), **_with_file(file))

    async def sync_commands(self) -> None:
        """Publish the commands to the dev guild, or globally."""
        try:
            if self.config.dev_guild:
                guild = discord.Object(self.config.dev_guild)
                self.client.tree.copy_global_to(guild=guild)
                synced = await self.client.tree.sync(guild=guild)
            else:
                synced = await self.client.tree.sync()
        except discord.HTTPException:
            log.exception("could not sync Discord commands")
            return
        log.info(
            "synced %d Discord command(s)%s",
            len(synced),
            f" to guild {self.config.dev_guild}" if self.config.dev_guild else " globally",
        )

    # commands

    def _register_commands(self) -> None:
        tree = self.client.tree

        @tree.command(name="search", description="Search this server's sounds by meaning")
        @app_commands.describe(query="What to listen for, e.g. 'dog barking in the rain'", k="How many results")
        async def search(
            interaction: discord.Interaction, query: str, k: app_commands.Range[int, 1, 50] | None = None
        ) -> None:
            await self._slash(interaction, "search", {"query": query, "k": k})

        @tree.command(name="add", description="Add a sound to this server's library")
        @app_commands.describe(file="An audio file", description="What it is (helps text search)")
        async def add(
            interaction: discord.Interaction, file: discord.Attachment, description: str | None = None
        ) -> None:
            author = interaction_author(interaction)
            if not may_add(author, self.config.add_role):
                await self._reply_now(
                    interaction, f"Only members with the “{self.config.add_role}” role can add sounds here."
                )
                return
            await self._slash(interaction, "add", {"file": file, "description": description})

        @tree.command(name="similar", description="Find sounds that sound like a file")
        @app_commands.describe(file="An audio file")
        async def similar(interaction: discord.Interaction, file: discord.Attachment) -> None:
            await self._slash(interaction, "similar", {"file": file})

        @tree.command(name="remove", description="Remove a sound you added (moderators: any sound)")
        @app_commands.describe(id="The sample id, e.g. 12")
        async def remove(interaction: discord.Interaction, id: str) -> None:
            await self._slash(interaction, "remove", {"id": id}, ephemeral=True)

        @tree.command(name="stats", description="How big this library is")
        async def stats(interaction: discord.Interaction) -> None:
            await self._slash(interaction, "stats", {}, ephemeral=True)

        @tree.command(name="help", description="What this bot can do")
        async def help_(interaction: discord.Interaction) -> None:
            await self._slash(interaction, "help", {}, ephemeral=True)

        @tree.context_menu(name=IDENTIFY_MENU)
        async def identify(interaction: discord.Interaction, message: discord.Message) -> None:
            await self._identify(interaction, message)

        tree.error(self._on_tree_error)

    async def _slash(
        self, interaction: discord.Interaction, name: str, options: dict[str, Any], ephemeral: bool = False
    ) -> None:
        file = options.get("file")
        if isinstance(file, discord.Attachment):
            options = options | {"file": attachment_of(file)}
            if not is_audio(options["file"]):
                await self._reply_now(interaction, not_audio_message(options["file"]))
                return
        req = slash_request(name, options, interaction_author(interaction), self._download, self.global_space)
        await self._answer(interaction, req, ephemeral=ephemeral)

    async def _identify(self, interaction: discord.Interaction, message: discord.Message) -> None:
        attachments = [attachment_of(a) for a in message.attachments]
        req = identify_request(interaction_author(interaction), attachments, self._download, self.global_space)
        if req is None:
            await self._reply_now(interaction, "That message has no voice message or audio file to listen to.")
            return
        await self._answer(interaction, req)

    async def on_button(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Next page edits the results in place; play and "more like this" answer just the clicker."""
        req = button_request(custom_id, interaction_author(interaction), self.global_space)
        if req is None:
            return
        await self._answer(interaction, req, ephemeral=True, in_place=req.command is Command.PAGE)

    # answering interactions

    async def _reply_now(self, interaction: discord.Interaction, text: str) -> None:
        """An immediate ephemeral answer, for problems found before asking the core."""
        await interaction.response.send_message(error(text).content, ephemeral=True)

    async def _answer(
        self, interaction: discord.Interaction, req: Request, ephemeral: bool = False, in_place: bool = False
    ) -> None:
        """Defer at once, ask the core, then edit the deferred answer (errors only to the asker)."""
        if in_place:
            await interaction.response.defer()
        else:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        rendered = render(await self._handle(req, upload_limit(interaction)))
        try:
            if rendered.ephemeral and (in_place or not ephemeral):
                if not in_place:
                    await interaction.delete_original_response()
                await interaction.followup.send(rendered.content, ephemeral=True)
                return
            file = self._preview(rendered)
            attachments = [file] if file is not None else []  # an empty list drops an earlier page's preview
            await interaction.edit_original_response(**self._message_kwargs(rendered), attachments=attachments)
        except discord.HTTPException:
            log.exception("could not answer Discord interaction %s", interaction.id)

    async def _on_tree_error(self, interaction: discord.Interaction, exc: app_commands.AppCommandError) -> None:
        log.error("Discord command failed", exc_info=exc)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)

    # plain messages

    async def on_message(self, message: discord.Message) -> None:
        """Answer voice messages (and audio files) sent in a DM, or mentioning the bot where allowed."""
        me = self.client.user
        if message.author.bot or me is None:
            return
        attachments = [attachment_of(a) for a in message.attachments]
        channel = message.channel
        place = Place(
            is_dm=message.guild is None,
            channel_id=channel.id,
            parent_id=getattr(channel, "parent_id", None),
        )
        mentioned = any(u.id == me.id for u in message.mentions)
        if not wants_message(message.flags.value, place, mentioned, attachments, self.config.watch_channels):
            return
        author = author_of(message.author, message.guild.id if message.guild else None, 0)
        req = identify_request(author, attachments, self._download, self.global_space)
        if req is None:
            return
        async with channel.typing():
            limit = message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT
            rendered = render(await self._handle(req, limit))
            file = self._preview(rendered)
        try:
            await message.reply(**self._message_kwargs(rendered), **_with_file(file), mention_author=False)
        except discord.HTTPException:
            log.exception("could not reply to Discord message %s", message.id)

    # shared pieces

    async def _handle(self, req: Request, limit: int) -> Reply:
        """Ask the core, saying how large a playable file may be; anything raised becomes an apology."""
        try:
            return await self.door.handle(dataclasses.replace(req, upload_limit=limit))
        except Exception:
            log.exception("engine failed on a Discord %s request", req.command)
            return Reply(kind=ReplyKind.ERROR, text=SORRY)

    async def _download(self, url: str) -> bytes:
        """Fetch an attachment from Discord's CDN; a dead link becomes a friendly error."""
        try:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT):
                return await self.client.http.get_from_cdn(url)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not download a Discord attachment: %s", exc)
            raise UserError(
                "I couldn't download that file from Discord (the link may have expired). Please upload it again."
            ) from exc

    @staticmethod
    def _preview(rendered: Rendered) -> discord.File | None:
        """The attached sample's ready preview as a file to upload, or None."""
        attach = rendered.attach
        if attach is None or attach.preview is None:
            return None
        return discord.File(attach.preview, filename=attach.filename)

    @staticmethod
    def _message_kwargs(rendered: Rendered) -> dict[str, Any]:
        """content, embed and view for a discord.py send or edit."""
        view: discord.ui.View | None = None
        if rendered.buttons:
            view = discord.ui.View(timeout=None)
            for spec in rendered.buttons:
                view.add_item(ResultButton(spec))
        return {
            "content": rendered.content or None,
            "embed": discord.Embed.from_dict(rendered.embed) if rendered.embed else None,
            "view": view,
        }


def _why(task: asyncio.Task[None] | None) -> str:
    """': why' a gateway task ended, if it says."""
    if task is None or not task.done():
        return ""
    if task.cancelled():
        return " (cancelled)"
    error = task.exception()
    return f": {type(error).__name__}: {error}" if error is not None else ""


def _with_file(file: discord.File | None) -> dict[str, Any]:
    """The file argument of a send, present only when there is a file."""
    return {"file": file} if file is not None else {}
