"""A fake Discord on 127.0.0.1: REST, CDN and a plain-JSON gateway, recording every REST call."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
MANAGE_MESSAGES = 1 << 13
VOICE_MESSAGE_FLAG = 1 << 13
EPHEMERAL_FLAG = 1 << 6
EVERYDAY_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 15) | (1 << 31)  # view, send, attach files, use app commands
MIB = 1024 * 1024


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One recorded REST request and the status the fake answered with."""

    method: str
    path: str  # below /api/v10, e.g. "/interactions/1/tok/callback"
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # the JSON body, or the payload_json part of a multipart body
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0


@dataclass
class _RateLimit:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    retry_after: float


class FakeDiscord:
    """Serves the parts of Discord that discord.py uses, on a loopback port chosen by the OS."""

    def __init__(self, token: str = "fake-token") -> None:
        self.token = token
        self._ids = itertools.count(1_100_000_000_000_000_001)
        self.app_id = self.new_id()
        self.bot_user = user_payload(self.app_id, "shira", bot=True)
        self.guild_id = self.new_id()
        self.channel_id = self.new_id()
        self.adder_role_id = self.new_id()
        self.adder_role_name = "sound-adders"
        self.calls: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # command-sync path -> registered commands
        self.identified = asyncio.Event()
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_queries: list[dict[str, str]] = []
        self.downloads: list[str] = []  # CDN paths requested, found or not
        self._attachments: dict[str, tuple[bytes, str]] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._messages: dict[str, dict[str, Any]] = {}  # "@original" per interaction token, and by id
        self._limits: list[_RateLimit] = []
        self._held_downloads: dict[str, asyncio.Event] = {}  # attachment file name -> released when set
        self._expired: set[str] = set()  # interaction tokens past their 15 minutes
        self._observers: list[Callable[[Call], None]] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._shards: dict[web.WebSocketResponse, tuple[int, int]] = {}  # socket -> its IDENTIFY's [id, count]
        self._refuse_code: int | None = None  # close every new gateway connection with this code
        self._seq = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle

    async def start(self) -> FakeDiscord:
        """Bind 127.0.0.1 on a free port and start serving."""
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{filename}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Close every gateway socket and the server."""
        for release in self._held_downloads.values():
            release.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def root(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        """What discord.http.Route.BASE should be."""
        return self.root + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The websocket URL, without query."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    def endpoints(self, **keys: object) -> dict[str, object]:
        """[discord] keys that point a bot at this fake (plus any given), for a config file with the token in env."""
        return {"api_base_url": self.api_base_url, "gateway_url": self.gateway_url, "dev_guild": self.guild_id, **keys}

    def section(self, **keys: object) -> dict[str, object]:
        """A whole enabled [discord] section for this fake, token included (plus any keys given)."""
        return {"enabled": True, "token": self.token, **self.endpoints(**keys)}

    def new_id(self) -> int:
        """A fresh snowflake."""
        return next(self._ids)

    def dm_channel_id(self, user_id: int | str) -> int:
        """The id of the bot's DM channel with a user (the same one every time)."""
        return self._dm_channels.setdefault(int(user_id), self.new_id())

    # test controls

    def rate_limit(self, method: str, path_regex: str, times: int = 1, retry_after: float = 0.25) -> None:
        """Answer the next `times` matching requests with a 429 that carries Discord's rate-limit headers."""
        self._limits.append(_RateLimit(method.upper(), re.compile(path_regex), times, retry_after))

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        voice: bool = False,
        missing: bool = False,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Host bytes on the fake CDN (or pretend to, with missing=True) and return the attachment payload."""
        att_id = str(self.new_id())
        url = f"{self.root}/attachments/{self.channel_id}/{att_id}/{filename}"
        if not missing:
            self._attachments[att_id] = (data, content_type or "application/octet-stream")
        payload: dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }
        if content_type is not None:
            payload["content_type"] = content_type
        if voice:
            payload |= {"duration_secs": 2.0, "waveform": "AAAA", "flags": 0}
        return payload

    def expire(self, interaction: dict[str, Any]) -> None:
        """Let an interaction's token lapse, as Discord does after 15 minutes: its webhook answers 401 from now on."""
        self._expired.add(interaction["token"])

    def hold_download(self, filename: str) -> asyncio.Event:
        """Keep CDN downloads of this attachment waiting until the returned event is set: a slow CDN."""
        return self._held_downloads.setdefault(filename, asyncio.Event())

    def observe(self, observer: Callable[[Call], None]) -> None:
        """Call observer(call) as each REST call arrives, before it is answered (a test may act at that moment)."""
        self._observers.append(observer)

    @property
    def sessions(self) -> int:
        """How many gateway sessions have identified so far (one per client start)."""
        return len(self.identify_payloads)

    async def close_gateway(self, code: int = 4000, forever: bool = False) -> None:
        """Close every gateway connection with code; with forever, close each new one the same way at once."""
        self._refuse_code = code if forever else None
        for ws in list(self._sockets):
            await ws.close(code=code)

    def open_gateway(self) -> None:
        """Accept gateway connections again after close_gateway(forever=True)."""
        self._refuse_code = None

    @property
    def connections(self) -> int:
        """Open gateway connections."""
        return len(self._sockets)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH event to every connected gateway socket whose shard owns the event's guild (DMs: shard 0)."""
        guild = int(data.get("guild_id") or 0)
        sockets = [ws for ws in self._sockets if self._owns(ws, guild)]
        if not sockets:
            raise RuntimeError("no gateway connection to dispatch to")
        for ws in sockets:
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    def _owns(self, ws: web.WebSocketResponse, guild_id: int) -> bool:
        """Discord's rule: shard (guild_id >> 22) % shard_count receives a guild's events."""
        shard_id, count = self._shards.get(ws, (0, 1))
        return (guild_id >> 22) % count == shard_id

    def find(self, method: str, path_regex: str, status: int | None = None) -> list[Call]:
        """Recorded calls whose method matches and whose path matches the regex (fullmatch)."""
        rx = re.compile(path_regex)
        return [
            c
            for c in self.calls
            if c.method == method.upper() and rx.fullmatch(c.path) and (status is None or c.status == status)
        ]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until predicate() is true; it is re-checked after every recorded REST call."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_for(self, method: str, path_regex: str, count: int = 1, timeout: float = 30.0) -> list[Call]:
        """Wait until at least `count` matching calls were answered (not counting 429s); return them."""

        def answered() -> list[Call]:
            return [c for c in self.find(method, path_regex) if c.status != 429]

        await self.wait_until(lambda: len(answered()) >= count, timeout)
        return answered()

    def interaction_calls(self, interaction: dict[str, Any]) -> list[Call]:
        """Every REST call made for one interaction: its callback and its webhook messages."""
        token = interaction["token"]
        return [c for c in self.calls if f"/{token}/" in c.path + "/"]

    def original(self, interaction: dict[str, Any]) -> dict[str, Any]:
        """The interaction's original response message as it stands now."""
        return self._messages[f"{interaction['token']}/@original"]

    # payload builders for tests

    def member_payload(
        self, user: dict[str, Any], permissions: int = EVERYDAY_PERMISSIONS, roles: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """A guild member as sent inside an interaction."""
        return {
            "user": user,
            "roles": [str(r) for r in roles],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }

    def channel_payload(self, channel_id: int | None = None) -> dict[str, Any]:
        """The text channel as sent inside an interaction."""
        cid = channel_id or self.channel_id
        return {
            "id": str(cid),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "general" if cid == self.channel_id else f"channel-{cid}",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }

    def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user: dict[str, Any],
        *,
        guild: bool,
        permissions: int,
        roles: tuple[int, ...],
        size_limit: int | None,
        message: dict[str, Any] | None,
    ) -> dict[str, Any]:
        iid = self.new_id()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": f"itok{iid}",
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(EVERYDAY_PERMISSIONS),
            "entitlements": [],
            "attachment_size_limit": size_limit if size_limit is not None else 10 * MIB,
        }
        if guild:
            payload |= {
                "guild_id": str(self.guild_id),
                "guild_locale": "en-US",
                "channel_id": str(self.channel_id),
                "channel": self.channel_payload(),
                "member": self.member_payload(user, permissions, roles),
                "authorizing_integration_owners": {"0": str(self.guild_id)},
                "context": 0,
            }
        else:
            dm_id = self.dm_channel_id(user["id"])
            payload |= {
                "channel_id": str(dm_id),
                "channel": {"id": str(dm_id), "type": 1, "recipients": [user]},
                "user": user,
                "authorizing_integration_owners": {"0": str(self.guild_id)},
                "context": 1,
            }
        if message is not None:
            payload["message"] = message
        return payload

    def slash(
        self,
        name: str,
        user: dict[str, Any],
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, dict[str, Any]] | None = None,
        guild: bool = True,
        permissions: int = EVERYDAY_PERMISSIONS,
        roles: tuple[int, ...] = (),
        size_limit: int | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE for a slash command; attachment options name an entry of `attachments`."""
        types = {str: 3, int: 4, bool: 5, float: 10}
        opts = []
        for key, value in (options or {}).items():
            opts.append({"name": key, "type": types[type(value)], "value": value})
        resolved: dict[str, Any] = {}
        for key, att in (attachments or {}).items():
            opts.append({"name": key, "type": 11, "value": att["id"]})
            resolved.setdefault("attachments", {})[att["id"]] = att
        data: dict[str, Any] = {"id": str(self._command_id(name)), "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        if guild and self._command_in_guild(name):
            data["guild_id"] = str(self.guild_id)
        return self._interaction(
            2, data, user, guild=guild, permissions=permissions, roles=roles, size_limit=size_limit, message=None
        )

    def message_command(
        self,
        name: str,
        user: dict[str, Any],
        target: dict[str, Any],
        *,
        guild: bool = True,
        size_limit: int | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE for a message context-menu command on `target`."""
        data: dict[str, Any] = {
            "id": str(self._command_id(name)),
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        if guild and self._command_in_guild(name):
            data["guild_id"] = str(self.guild_id)
        return self._interaction(
            2, data, user, guild=guild, permissions=EVERYDAY_PERMISSIONS, roles=(), size_limit=size_limit, message=None
        )

    def button_click(
        self,
        custom_id: str,
        user: dict[str, Any],
        message: dict[str, Any],
        *,
        guild: bool = True,
        permissions: int = EVERYDAY_PERMISSIONS,
        size_limit: int | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE for a click on a button of `message`."""
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(
            3, data, user, guild=guild, permissions=permissions, roles=(), size_limit=size_limit, message=message
        )

    def user_message(
        self,
        user: dict[str, Any],
        *,
        content: str = "",
        attachments: tuple[dict[str, Any], ...] = (),
        voice: bool = False,
        mention_bot: bool = False,
        guild: bool = True,
        channel_id: int | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from a user."""
        cid = channel_id or (self.channel_id if guild else self.dm_channel_id(user["id"]))
        payload = message_payload(
            self.new_id(),
            cid,
            user,
            content=content,
            attachments=list(attachments),
            flags=VOICE_MESSAGE_FLAG if voice else 0,
            mentions=[self.bot_user] if mention_bot else [],
        )
        if guild:
            payload["guild_id"] = str(self.guild_id)
            payload["member"] = {k: v for k, v in self.member_payload(user).items() if k not in ("user", "permissions")}
        return payload

    def _command_id(self, name: str) -> int:
        for cmds in self.commands.values():
            for cmd in cmds:
                if cmd["name"] == name:
                    return int(cmd["id"])
        return self.new_id()

    def _command_in_guild(self, name: str) -> bool:
        guild_path = f"/applications/{self.app_id}/guilds/{self.guild_id}/commands"
        return any(cmd["name"] == name for cmd in self.commands.get(guild_path, []))

    # gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """HELLO, then READY + GUILD_CREATE after IDENTIFY; heartbeats are ACKed.

        discord.py asks for ?encoding=json&compress=zlib-stream; we answer with plain JSON text frames,
        which it accepts as well (only binary frames go through its decompressor).
        """
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        if self._refuse_code is not None:
            await ws.close(code=self._refuse_code)
            return ws
        self._sockets.add(ws)
        try:
            await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                await self._on_gateway_message(ws, json.loads(msg.data))
        finally:
            self._sockets.discard(ws)
            self._shards.pop(ws, None)
        return ws

    async def _on_gateway_message(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == 1:  # heartbeat
            await ws.send_json({"op": 11})
        elif op == 2:  # identify
            self.identify_payloads.append(msg["d"])
            if msg["d"].get("token") != self.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return
            shard_id, count = msg["d"].get("shard") or (0, 1)
            self._shards[ws] = (int(shard_id), int(count))
            await self._send_ready(ws)
            async with self._changed:
                self._changed.notify_all()
        elif op == 6:  # resume
            await ws.send_json({"op": 0, "t": "RESUMED", "s": next(self._seq), "d": {}})

    async def _send_ready(self, ws: web.WebSocketResponse) -> None:
        owned = self._owns(ws, self.guild_id)
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}] if owned else [],
            "shard": list(self._shards.get(ws, (0, 1))),
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }
        await ws.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
        if owned:
            await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": self._guild()})
        self.identified.set()

    def new_guild(self) -> tuple[dict[str, Any], int]:
        """A GUILD_CREATE payload for a server the bot has just been added to, and its system channel's id."""
        guild_id, channel_id = self.new_id(), self.new_id()
        payload = self._guild(guild_id, channel_id)
        del payload["unavailable"]  # a join carries no "unavailable": that is how clients tell it from an outage
        return payload, channel_id

    def _guild(self, guild_id: int | None = None, channel_id: int | None = None) -> dict[str, Any]:
        gid = str(guild_id or self.guild_id)
        channel = self.channel_payload(channel_id) | {"guild_id": gid}
        return {
            "id": gid,
            "name": "Fake Guild",
            "icon": None,
            "owner_id": str(self.new_id()),
            "afk_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [
                {
                    "id": gid,
                    "name": "@everyone",
                    "color": 0,
                    "hoist": False,
                    "position": 0,
                    "permissions": str(EVERYDAY_PERMISSIONS),
                    "managed": False,
                    "mentionable": False,
                },
                {
                    "id": str(self.adder_role_id),
                    "name": self.adder_role_name,
                    "color": 0,
                    "hoist": False,
                    "position": 1,
                    "permissions": "0",
                    "managed": False,
                    "mentionable": False,
                },
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": channel["id"],
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "large": False,
            "unavailable": False,
            "member_count": 2,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "voice_states": [],
            "members": [self.member_payload(self.bot_user)],
            "channels": [channel],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }

    # CDN

    async def _cdn(self, request: web.Request) -> web.Response:
        self.downloads.append(request.path)
        async with self._changed:
            self._changed.notify_all()
        release = self._held_downloads.get(request.match_info["filename"])
        if release is not None:
            await release.wait()
        found = self._attachments.get(request.match_info["id"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)

    # REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        call = Call(request.method, path, dict(request.query), dict(request.headers))
        await self._read_body(request, call)
        for observer in self._observers:
            observer(call)
        response = self._maybe_rate_limited(call)
        if response is None:
            if request.headers.get("Authorization") != f"Bot {self.token}" and not self._token_free(path):
                response = _error(401, 0, "401: Unauthorized")
            else:
                response = self._route(call)
        call.status = response.status
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    @staticmethod
    def _token_free(path: str) -> bool:
        return path.startswith("/interactions/") or path.startswith("/webhooks/")

    async def _read_body(self, request: web.Request, call: Call) -> None:
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    call.body = json.loads(data)
                else:
                    call.files.append(
                        UploadedFile(
                            part.name or "",  # type: ignore[union-attr]
                            part.filename or "",  # type: ignore[union-attr]
                            part.headers.get("Content-Type", ""),  # type: ignore[union-attr]
                            bytes(data),
                        )
                    )
        elif request.can_read_body:
            raw = await request.read()
            call.body = json.loads(raw) if raw else None

    def _maybe_rate_limited(self, call: Call) -> web.Response | None:
        for limit in self._limits:
            if limit.remaining > 0 and limit.method == call.method and limit.pattern.fullmatch(call.path):
                limit.remaining -= 1
                ra = limit.retry_after
                headers = {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + ra:.3f}",
                    "X-RateLimit-Reset-After": f"{ra:.3f}",
                    "X-RateLimit-Bucket": "fakebucket" + str(abs(hash(limit.pattern.pattern)) % 10_000),
                    "X-RateLimit-Scope": "user",
                    "Retry-After": str(math.ceil(ra)),
                    "Via": "1.1 google",
                }
                body = {"message": "You are being rate limited.", "retry_after": ra, "global": False}
                return _json(body, status=429, headers=headers)
        return None

    def _route(self, call: Call) -> web.Response:
        p, m = call.path, call.method
        app = str(self.app_id)
        if m == "GET" and p == "/gateway/bot":
            return _json(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
                }
            )
        if m == "GET" and p == "/gateway":
            return _json({"url": self.gateway_url})
        if m == "GET" and p == "/users/@me":
            return _json(self.bot_user)
        if m == "GET" and p == "/oauth2/applications/@me":
            return _json(self._app_info())
        if re.fullmatch(rf"/applications/{app}(/guilds/\d+)?/commands", p):
            if m == "PUT":
                return _json(self._sync_commands(p, call.body or []))
            if m == "GET":
                return _json(self.commands.get(p, []))
        if m == "POST" and (match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p)):
            return self._interaction_callback(match.group(1), match.group(2), call)
        if match := re.fullmatch(rf"/webhooks/{app}/([^/]+)(?:/messages/([^/]+))?", p):
            return self._webhook(match.group(1), match.group(2), call)
        if m == "POST" and (match := re.fullmatch(r"/channels/(\d+)/messages", p)):
            message = self._new_message(int(match.group(1)), call)
            return _json(message)
        if m == "POST" and p == "/users/@me/channels":  # open a DM
            recipient = user_payload(int((call.body or {})["recipient_id"]), "someone")
            return _json({"id": str(self.dm_channel_id(recipient["id"])), "type": 1, "recipients": [recipient]})
        if m == "POST" and re.fullmatch(r"/channels/\d+/typing", p):
            return web.Response(status=204)
        return _error(404, 0, "404: Not Found")

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": str(self.app_id),
            "name": "shira",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user_payload(self.new_id(), "owner"),
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _sync_commands(self, path: str, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        guild = re.search(r"/guilds/(\d+)/", path)
        registered = []
        for cmd in body:
            out = {
                "id": str(self.new_id()),
                "application_id": str(self.app_id),
                "version": "1",
                "description": "",
                "default_member_permissions": None,
            } | cmd
            if guild:
                out["guild_id"] = guild.group(1)
            registered.append(out)
        self.commands[path] = registered
        return registered

    def _new_message(self, channel_id: int, call: Call, ephemeral: bool = False) -> dict[str, Any]:
        body = call.body or {}
        attachments = [
            {
                "id": str(self.new_id()),
                "filename": f.filename,
                "size": len(f.data),
                "url": f"{self.root}/attachments/{channel_id}/0/{f.filename}",
                "proxy_url": f"{self.root}/attachments/{channel_id}/0/{f.filename}",
                "content_type": f.content_type,
            }
            for f in call.files
        ]
        flags = int(body.get("flags") or 0) | (EPHEMERAL_FLAG if ephemeral else 0)
        message = message_payload(
            self.new_id(),
            channel_id,
            self.bot_user,
            content=body.get("content") or "",
            attachments=attachments,
            flags=flags,
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
        )
        message["application_id"] = str(self.app_id)
        self._messages[message["id"]] = message
        return message

    def _interaction_callback(self, interaction_id: str, token: str, call: Call) -> web.Response:
        body = call.body or {}
        kind = body.get("type")
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL_FLAG)
        message: dict[str, Any] | None = None
        if kind in (4, 5):  # channel message, deferred channel message
            message = self._new_message(self.channel_id, call, ephemeral)
            if kind == 5:
                message["flags"] |= 1 << 7  # LOADING
            self._messages[f"{token}/@original"] = message
        result: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_id": message["id"] if message else None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            },
            "resource": {"type": kind} | ({"message": message} if message else {}),
        }
        if call.query.get("with_response") in ("1", "true", "True"):
            return _json(result)
        return web.Response(status=204)

    def _webhook(self, token: str, message_id: str | None, call: Call) -> web.Response:
        if token in self._expired:
            return _error(401, 50027, "Invalid Webhook Token")
        key = f"{token}/@original" if message_id == "@original" else message_id
        if call.method == "POST" and message_id is None:
            message = self._new_message(self.channel_id, call)
            if call.query.get("wait") in ("1", "true", "True"):
                return _json(message)
            return web.Response(status=204)
        found = self._messages.get(key or "")
        if found is None:
            return _error(404, 10008, "Unknown Message")
        if call.method == "GET":
            return _json(found)
        if call.method == "DELETE":
            self._messages.pop(key or "", None)
            return web.Response(status=204)
        if call.method == "PATCH":
            body = call.body or {}
            updated = dict(found)
            for name in ("content", "embeds", "components", "flags"):
                if name in body:
                    updated[name] = body[name]
            if call.files or "attachments" in body:
                updated["attachments"] = [
                    {
                        "id": str(self.new_id()),
                        "filename": f.filename,
                        "size": len(f.data),
                        "url": f"{self.root}/attachments/0/0/{f.filename}",
                        "proxy_url": f"{self.root}/attachments/0/0/{f.filename}",
                    }
                    for f in call.files
                ]
            updated["flags"] = int(updated.get("flags") or 0) & ~(1 << 7)
            self._messages[key or ""] = updated
            return _json(updated)
        return _error(405, 0, "405: Method Not Allowed")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly application/json, as discord.py expects."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"} | (headers or {})
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status=status)


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    """A Discord user object."""
    payload: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name.title(),
        "avatar": None,
    }
    if bot:
        payload["bot"] = True
    return payload


def message_payload(
    message_id: int,
    channel_id: int,
    author: dict[str, Any],
    *,
    content: str = "",
    attachments: list[dict[str, Any]] | None = None,
    flags: int = 0,
    embeds: list[dict[str, Any]] | None = None,
    components: list[dict[str, Any]] | None = None,
    mentions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Discord message object."""
    return {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "type": 0,
        "content": content,
        "author": author,
        "attachments": attachments or [],
        "embeds": embeds or [],
        "components": components or [],
        "mentions": mentions or [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": "2024-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "flags": flags,
    }
