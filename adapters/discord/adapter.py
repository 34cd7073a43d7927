"""The Discord adapter: a discord.py client with slash commands, a message command and voice messages.

Each interaction is journaled in the inbox, then deferred, answered through its webhook token and marked done;
each voice message is journaled as it arrives. At start-up what an earlier run left pending is answered, late:
interactions while their token lasts, messages by replying to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final, Literal

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.config import DiscordConfig
from adapters.discord.render import BUTTON_ID_PATTERN, Button, Rendered, error, render
from adapters.discord.translate import (
    BUTTON,
    DEFAULT_UPLOAD_LIMIT,
    IDENTIFY,
    MESSAGE,
    PLATFORM,
    SLASH,
    Attachment,
    Author,
    Place,
    Taken,
    button_request,
    first_audio,
    is_audio,
    may_add,
    not_audio_message,
    wants_message,
)
from adapters.timeline import Progress
from core.command_table import Platform, Style, entries, entry
from core.config import ConfigError
from core.errors import UserError
from core.messages import Command, Door, Inbox, Reply, ReplyKind, Request

log = logging.getLogger(__name__)

IDENTIFY_MENU = next(e.name for e in entries(Platform.DISCORD) if e.style is Style.MESSAGE)
DOWNLOAD_TIMEOUT = 60.0
SORRY = "Sorry, something went wrong on my side. Please try again."
RESTARTING = "I'm restarting; please try again in a moment."
LATE = "*Sorry for the delay — I was restarting.*"
ORIGINAL: Final[Any] = "@original"  # Discord's name for an interaction's first answer (discord.py types ids as int)
JOURNAL_WAIT = 1.0  # seconds the journal may take before the defer goes ahead anyway: Discord wants it within 3 s
TOKEN_SECONDS = 14 * 60.0  # an interaction token lasts 15 minutes; a replay leaves itself one to answer
MESSAGE_SECONDS = 24 * 3600.0  # a message's attachment links are signed for about a day
INVALID_TOKEN = 50027  # Discord's code for an expired or unknown interaction token
PROGRESS_SECONDS = 5.0  # a timeline's progress edits its answer at most this often (webhooks take 5 per 5 s)


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

    def __init__(self, adapter: DiscordAdapter, **shards: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True  # no message-content intent: mentions and DMs still carry attachments
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), **shards)
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

    async def on_guild_join(self, guild: discord.Guild) -> None:
        """A server added the bot: say hello."""
        await self.adapter.on_guild_join(guild)

    async def on_ready(self) -> None:
        """The gateway session is up (after IDENTIFY)."""
        self.adapter.connected(True)

    async def on_resumed(self) -> None:
        """The gateway session is back (after RESUME)."""
        self.adapter.connected(True)

    async def on_disconnect(self) -> None:
        """The gateway connection was lost; discord.py reconnects by itself unless the close was final."""
        self.adapter.connected(False)


class ShardedShiraClient(ShiraClient, discord.AutoShardedClient):
    """A ShiraClient that runs some of the bot's shards: Discord sends each shard only its own guilds' events."""


def new_client(adapter: DiscordAdapter) -> ShiraClient:
    """The client the config asks for: one unsharded connection, or the configured shards."""
    config = adapter.config
    if not config.shard_count:
        if config.shard_ids:
            raise ConfigError("[discord] shard_ids needs shard_count (the bot's total number of shards)")
        return ShiraClient(adapter)
    wrong = [i for i in config.shard_ids if i >= config.shard_count]
    if wrong:
        raise ConfigError(f"[discord] shard_ids must each be below shard_count {config.shard_count} (got {wrong})")
    ids = list(config.shard_ids) or None
    return ShardedShiraClient(adapter, shard_ids=ids, shard_count=config.shard_count)


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
        self,
        door: Door,
        config: DiscordConfig,
        global_space: str = "global",
        ready_timeout: float = 60.0,
        inbox: Inbox | None = None,
    ) -> None:
        self.door = door
        self.config = config
        self.inbox = inbox
        self._global_space = global_space
        self.ready_timeout = ready_timeout
        self.client = new_client(self)
        self._connect_task: asyncio.Task[None] | None = None
        self._saved_endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        self._work: set[asyncio.Task[Any]] = set()  # interactions and messages being answered
        self._draining = False  # new interactions hear "restarting"; new messages wait in the inbox
        self._closing = False  # events are ignored altogether
        self._register_commands()
        self._serving = False
        self._down_since: float | None = time.monotonic()  # until the first READY

    @property
    def global_space(self) -> str | None:
        """The shared library searched as well, when enabled."""
        return self._global_space if self.config.global_library else None

    # lifespan

    async def start(self) -> None:
        """Log in, sync commands, start answering what the inbox holds from an earlier run, connect in a background
        task and return once the gateway is ready. The replay starts before the gateway connects, so that it takes
        only what earlier runs left: everything from the gateway is this run's.

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
            await self._replay()
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
            self.client = new_client(self)
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

    async def drain(self, seconds: float) -> None:
        """Answer new interactions with "restarting" and keep new messages for the next start; give those in
        flight `seconds` to be answered, then cancel the rest (they stay pending in the inbox)."""
        self._draining = True
        await self._finish(seconds)

    async def stop(self) -> None:
        """Ignore new events, drop what is in flight (the inbox keeps it), close the gateway and HTTP session,
        and put discord.py's endpoints back."""
        self._draining = self._closing = True
        self._serving = False
        await self._finish(0)
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
        await target.send(**self._message_kwargs(rendered), files=self._files(rendered))

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
        """Register every Discord command of the one command table, named and described as it says."""
        tree = self.client.tree

        def described(name: str) -> Callable[[Any], Any]:
            spec = entry(name, Platform.DISCORD)

            def register(callback: Any) -> Any:
                if spec.options:
                    callback = app_commands.describe(**{o.name: o.description for o in spec.options})(callback)
                return tree.command(name=spec.name, description=spec.summary)(callback)

            return register

        @described("search")
        async def search(
            interaction: discord.Interaction, query: str, k: app_commands.Range[int, 1, 50] | None = None
        ) -> None:
            await self._slash(interaction, "search", {"query": query, "k": k})

        @described("add")
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

        @described("similar")
        async def similar(interaction: discord.Interaction, file: discord.Attachment) -> None:
            await self._slash(interaction, "similar", {"file": file})

        @described("timeline")
        async def timeline(
            interaction: discord.Interaction, file: discord.Attachment, labels: str | None = None
        ) -> None:
            await self._slash(interaction, "timeline", {"file": file, "labels": labels})

        @described("remove")
        async def remove(interaction: discord.Interaction, id: str) -> None:
            await self._slash(interaction, "remove", {"id": id}, ephemeral=True)

        @described("labels")
        async def labels(
            interaction: discord.Interaction,
            action: Literal["add", "remove"] | None = None,
            label: app_commands.Range[str, 1, 100] | None = None,
        ) -> None:
            await self._slash(interaction, "labels", {"action": action, "label": label}, ephemeral=True)

        @described("stats")
        async def stats(interaction: discord.Interaction) -> None:
            await self._slash(interaction, "stats", {}, ephemeral=True)

        @described("help")
        async def help_(interaction: discord.Interaction) -> None:
            await self._slash(interaction, "help", {}, ephemeral=True)

        @tree.context_menu(name=IDENTIFY_MENU)
        async def identify(interaction: discord.Interaction, message: discord.Message) -> None:
            await self._identify(interaction, message)

        tree.error(self._on_tree_error)
        registered = {command.name for command in tree.get_commands()}
        listed = {e.name for e in entries(Platform.DISCORD)}
        if registered != listed:  # the help would promise what isn't there, or hide what is
            raise RuntimeError(f"Discord commands {sorted(registered)} differ from the command table {sorted(listed)}")

    async def _slash(
        self, interaction: discord.Interaction, name: str, options: dict[str, Any], ephemeral: bool = False
    ) -> None:
        file = options.get("file")
        attachments: tuple[Attachment, ...] = ()
        if isinstance(file, discord.Attachment):
            attachments = (attachment_of(file),)
            if not is_audio(attachments[0]):
                await self._reply_now(interaction, not_audio_message(attachments[0]))
                return
        rest = {key: value for key, value in options.items() if key != "file"}
        await self._take(interaction, SLASH, ephemeral, name=name, options=rest, attachments=attachments)

    async def _identify(self, interaction: discord.Interaction, message: discord.Message) -> None:
        attachments = tuple(attachment_of(a) for a in message.attachments)
        if first_audio(attachments) is None:
            await self._reply_now(interaction, "That message has no voice message or audio file to listen to.")
            return
        await self._take(interaction, IDENTIFY, attachments=attachments)

    async def on_button(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Next page edits the results in place; play and "more like this" answer just the clicker."""
        req = button_request(custom_id, interaction_author(interaction), self.global_space)
        if req is None:
            return
        await self._take(interaction, BUTTON, True, in_place=req.command is Command.PAGE, custom_id=custom_id)

    # answering interactions

    async def _reply_now(self, interaction: discord.Interaction, text: str) -> None:
        """An immediate ephemeral answer, for problems found before asking the core."""
        if self._closing:
            return
        with self._in_flight():
            await interaction.response.send_message(error(text).content, ephemeral=True)

    async def _take(self, interaction: discord.Interaction, kind: str, ephemeral: bool = False, **what: Any) -> None:
        """Journal an interaction, defer it (the acknowledgement), answer it through its webhook, mark it done."""
        if self._draining:
            await self._reply_now(interaction, RESTARTING)
            return
        taken = Taken(
            kind,
            interaction_author(interaction),
            upload_limit(interaction),
            application_id=interaction.application_id,
            token=interaction.token,
            ephemeral=ephemeral,
            channel_id=interaction.channel_id or 0,  # where to post an answer that outlives the token
            **what,
        )
        key = str(interaction.id)
        with self._in_flight():
            # The journal goes first, so what Discord hears we took on is in the inbox; but the defer is due
            # within 3 s, so a journal slowed down by the store's commits gets JOURNAL_WAIT before it goes ahead.
            journal = asyncio.ensure_future(self._record(key, taken))
            await asyncio.wait({journal}, timeout=JOURNAL_WAIT)
            try:
                if taken.in_place:
                    await interaction.response.defer()
                else:
                    await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            except discord.HTTPException:
                await journal
                await self._done(key)  # Discord refused it: nothing for a later run to answer
                raise
            await journal
            await self._complete(key, taken)

    async def _complete(self, key: str, taken: Taken, late: bool = False) -> None:
        """Ask the core and deliver the answer; once delivered (or refused by Discord), mark it done."""
        req = taken.request(self._download, self.global_space, self.config.admin_role)
        if req is None or (late and taken.is_interaction and not await self._deferred(key, taken)):
            await self._done(key)
            return
        progress = self._progress(taken) if req.command is Command.TIMELINE and taken.is_interaction else None
        async with self._typing(taken):
            limit = 0 if req.command is Command.ADD else taken.upload_limit  # an addition attaches nothing
            try:
                reply = await self._handle(dataclasses.replace(req, replay=late, progress=progress), limit)
            finally:
                if progress is not None:
                    await progress.close()
        rendered = render(reply, taken.attachments[0].filename if taken.attachments else "", taken.upload_limit)
        if late:
            rendered = dataclasses.replace(rendered, content=f"{LATE}\n{rendered.content}".strip()[:2000])
        try:
            if taken.is_interaction:
                await self._edit_answer(taken, rendered)
            else:
                await self._reply_to(taken, rendered)
        except discord.HTTPException as exc:
            expired = taken.is_interaction and exc.code == INVALID_TOKEN
            if not (expired and await self._post_instead(taken, rendered)):
                what = "interaction" if taken.is_interaction else "message"
                log.exception("could not answer Discord %s %s", what, key)
        await self._done(key)

    async def _post_instead(self, taken: Taken, rendered: Rendered) -> bool:
        """Post in the channel an answer that outlived its interaction's 15-minute token (a long timeline's), naming
        the asker; False for an error, which is for the asker alone, or when there is no channel to post in."""
        if rendered.ephemeral or not taken.channel_id:
            return False
        log.info("Discord: an answer outlived its interaction token; posting it in channel %s", taken.channel_id)
        content = f"<@{taken.author.user_id}> {rendered.content}".strip()[:2000]
        kwargs = self._message_kwargs(rendered) | {"content": content}
        channel = self.client.get_partial_messageable(taken.channel_id)
        try:
            await channel.send(**kwargs, files=self._files(rendered))
        except discord.HTTPException:
            log.exception("could not post a late answer in Discord channel %s", taken.channel_id)
        return True

    def _webhook(self, taken: Taken) -> discord.Webhook:
        """The interaction's webhook, as discord.py builds it for follow-ups, from the kept application and token."""
        data: Any = {"id": taken.application_id, "type": 3, "token": taken.token}
        return discord.Webhook.from_state(data, state=self.client._connection)

    def _progress(self, taken: Taken) -> Progress:
        """A timeline's progress, shown by editing the deferred answer ("Analysing… 3:20 of 40:00")."""
        webhook = self._webhook(taken)

        async def show(text: str) -> None:
            await webhook.edit_message(ORIGINAL, content=text)

        return Progress(show, PROGRESS_SECONDS, taken.attachments[0].duration if taken.attachments else None)

    async def _deferred(self, key: str, taken: Taken) -> bool:
        """Whether a journaled interaction's acknowledgement reached Discord (a kill can fall between the two)."""
        try:
            await self._webhook(taken).fetch_message(ORIGINAL)
        except discord.NotFound:
            log.warning("Discord interaction %s was journaled but never acknowledged; dropping it", key)
            return False
        except discord.HTTPException:
            pass  # can't tell: try to answer
        return True

    async def _edit_answer(self, taken: Taken, rendered: Rendered) -> None:
        """Edit the deferred answer through the interaction's webhook (errors go to the asker only)."""
        webhook = self._webhook(taken)
        if rendered.ephemeral and (taken.in_place or not taken.ephemeral):
            if not taken.in_place:
                await webhook.delete_message(ORIGINAL)
            await webhook.send(rendered.content, ephemeral=True)
            return
        attachments = self._files(rendered)  # an empty list drops an earlier page's preview
        await webhook.edit_message(ORIGINAL, **self._message_kwargs(rendered), attachments=attachments)

    async def _on_tree_error(self, interaction: discord.Interaction, exc: app_commands.AppCommandError) -> None:
        log.error("Discord command failed", exc_info=exc)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)

    # joining a server

    async def on_guild_join(self, guild: discord.Guild) -> None:
        """Welcome a new server in its system channel, with one thing to try, if the bot may write there."""
        channel, me = guild.system_channel, guild.me  # without the members intent, guild.me may be unknown
        if channel is None or (me is not None and not channel.permissions_for(me).send_messages):
            log.info("joined guild %s; no system channel to greet in", guild.id)
            return
        reply = await self._handle(
            Request(PLATFORM, f"{PLATFORM}:guild:{guild.id}", f"{PLATFORM}:bot", Command.START), 0
        )
        try:
            await channel.send(**self._message_kwargs(render(reply)))
        except discord.HTTPException:
            log.warning("could not greet guild %s", guild.id, exc_info=True)

    # plain messages

    async def on_message(self, message: discord.Message) -> None:
        """Answer voice messages (and audio files) sent in a DM, or mentioning the bot where allowed."""
        me = self.client.user
        if message.author.bot or me is None or self._closing:
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
        if first_audio(attachments) is None:
            return
        taken = Taken(
            MESSAGE,
            author_of(message.author, message.guild.id if message.guild else None, 0),
            message.guild.filesize_limit if message.guild else DEFAULT_UPLOAD_LIMIT,
            attachments=tuple(attachments),
            channel_id=channel.id,
            message_id=message.id,
        )
        key = str(message.id)
        with self._in_flight():
            await self._record(key, taken)
            if self._draining:
                if self.inbox is not None:
                    log.info("Discord message %s arrived while draining; the next start answers it", key)
                return
            await self._complete(key, taken)

    async def _reply_to(self, taken: Taken, rendered: Rendered) -> None:
        """Reply to the message in its channel (a live one, or one journaled before a restart)."""
        message = self.client.get_partial_messageable(taken.channel_id).get_partial_message(taken.message_id)
        await message.reply(**self._message_kwargs(rendered), files=self._files(rendered), mention_author=False)

    def _typing(self, taken: Taken) -> contextlib.AbstractAsyncContextManager[None]:
        """Show typing… in the channel of a message while its answer is worked out (interactions show "thinking…")."""
        if taken.is_interaction:
            return contextlib.nullcontext()
        return self.client.get_partial_messageable(taken.channel_id).typing()

    # the inbox

    async def _record(self, key: str, taken: Taken) -> None:
        """Journal one request; a failure is logged and the request is answered all the same."""
        if self.inbox is None:
            return
        try:
            await self.inbox.record(PLATFORM, {key: taken.to_json()})
        except Exception:
            log.exception("could not journal Discord request %s; answering it without", key)

    async def _done(self, key: str) -> None:
        if self.inbox is None:
            return
        try:
            await self.inbox.done(PLATFORM, key)
        except Exception:
            log.exception("could not mark Discord request %s answered; the next start may answer it again", key)

    async def _replay(self) -> None:
        """Start answering what earlier runs journaled and never answered, while they can still be answered."""
        if self.inbox is None:
            return
        waiting = await self.inbox.pending(PLATFORM)
        if waiting:
            log.info("Discord: %d request(s) left unanswered before the restart", len(waiting))
        for item in waiting:
            try:
                taken = Taken.from_json(item.payload)
            except (KeyError, TypeError, ValueError):
                log.warning("Discord request %s in the inbox can't be read; dropping it", item.key)
                await self._done(item.key)
                continue
            age = time.time() - item.received_at
            if age > (TOKEN_SECONDS if taken.is_interaction else MESSAGE_SECONDS):
                what = "its token has expired" if taken.is_interaction else "its links have expired"
                log.warning("Discord %s %s is %.0f min old and %s; dropping it", taken.kind, item.key, age / 60, what)
                await self._done(item.key)
                continue
            self._spawn(self._complete(item.key, taken, late=True))

    # what is in flight

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count the running task (one discord.py started for an event) as in flight until the block ends."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._work.add(task)
        try:
            yield
        finally:
            self._work.discard(task)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine, name="discord-replay")
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _finish(self, seconds: float) -> None:
        """Give what is in flight `seconds` to be answered, then cancel the rest: it stays pending in the inbox."""
        work = {task for task in self._work if task is not asyncio.current_task()}
        if not work:
            return
        log.info("Discord: answering %d request(s) in flight (up to %.0f s)", len(work), seconds)
        _, unfinished = await asyncio.wait(work, timeout=seconds)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            log.warning("Discord: %d request(s) not answered in time; the next start answers them", len(unfinished))

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
    def _files(rendered: Rendered) -> list[discord.File]:
        """The files to upload: the attached sample's ready preview, and any made for the reply (a timeline's)."""
        attach = rendered.attach
        files = [discord.File(io.BytesIO(data), filename=name) for name, data in rendered.files]
        if attach is not None and attach.preview is not None:
            files.insert(0, discord.File(attach.preview, filename=attach.filename))
        return files

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
