"""Telegram's webhook mode: an HTTP endpoint that journals each posted update before it answers 200.

Telegram posts every update to `webhook_url` and retries until it gets a 2xx, so several frontends behind one
load balancer can share a bot: whichever receives an update journals it (the inbox tells a repeat from a new
one) and answers it. A wrong secret token is refused; a failed journal answers 500 so that Telegram tries again;
while draining, 503 sends the update to another frontend, or back to this one after the restart.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024  # an update is a few KB; Telegram's largest are far below this

Accept = Callable[[dict[str, Any]], Awaitable[bool]]  # journal and start one update; False: not journaled


class WebhookServer:
    """Serves the webhook path on the listen address; start() binds it, stop() closes it."""

    def __init__(self, url: str, listen: str, secret: str, accept: Accept) -> None:
        self.path = urlsplit(url).path or "/"
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._secret = secret.encode()
        self._accept = accept
        self._runner: web.AppRunner | None = None
        self._open = False  # False while draining: updates are refused with 503

    @property
    def running(self) -> bool:
        """Whether the endpoint is serving and taking updates."""
        return self._runner is not None and self._open

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when the config asked for 0."""
        assert self._runner is not None, "not started"
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind the listen address and start taking updates."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.path, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(f"the Telegram webhook can't listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self._runner, self._open = runner, True
        log.info("telegram: webhook listening on %s:%d%s", *self.address, self.path)

    def close(self) -> None:
        """Refuse further updates (503), so that Telegram keeps them for another frontend or the next start."""
        self._open = False

    async def stop(self) -> None:
        """Refuse further updates and close the endpoint."""
        self._open = False
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            log.warning("telegram: webhook post from %s with a wrong secret token; refused", request.remote)
            return web.Response(status=403)
        if not self._open:
            return web.Response(status=503, headers={"Retry-After": "1"})
        try:
            update = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="not JSON")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        if not await self._accept(update):
            return web.Response(status=500)  # not journaled: Telegram will post it again
        return web.Response(status=200)
