"""Telegram's flood limits as PTB's AIORateLimiter applies them, minus what doesn't count as a message."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

# Calls that carry a chat id but post nothing into the chat: they must not spend a group's 20 messages a minute.
NOT_MESSAGES = frozenset({"sendChatAction", "getChatMember", "getChat", "getChatAdministrators"})


class MessageRateLimiter(AIORateLimiter):
    """Group limits count only messages: chat actions and look-ups skip the per-group limiter (429s still retry)."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Apply the limits, leaving the chat out of it for calls that post nothing."""
        if endpoint in NOT_MESSAGES:
            data = {key: value for key, value in data.items() if key != "chat_id"}
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
