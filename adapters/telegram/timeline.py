"""/timeline on Telegram: one progress message, edited within the flood limits, becomes the answer's text; the
chart follows as a photo with the summary as its caption, and the subtitles as a .srt document."""

from __future__ import annotations

import dataclasses
import logging

from telegram import Bot, LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest

from adapters.telegram import render
from adapters.timeline import Progress, clock, output_name, progress_text
from core.messages import Door, Reply, Request

log = logging.getLogger(__name__)

PRIVATE_SECONDS = 3.0  # progress edits at most this often in a private chat (about 1 message a second allowed)
GROUP_SECONDS = 12.0  # and in a group, whose 20 messages a minute the answer and everyone else share


def answer_text(reply: Reply) -> str:
    """The progress message's final HTML: the summary in bold, then an event a line (or the error)."""
    timeline = reply.timeline
    if timeline is None:
        return render.render(reply).text or render.escape(reply.text)
    head, _, events = reply.text.partition("\n")
    return render.clip(f"<b>{render.escape(head)}</b>\n{render.escape(events)}".strip())


def photo_caption(reply: Reply) -> str:
    """The chart's caption: the one-line summary."""
    timeline = reply.timeline
    assert timeline is not None
    text = f"Timeline of {clock(timeline.duration)}: {timeline.summary}."
    return text if len(text) <= render.MAX_CAPTION else text[: render.MAX_CAPTION - 1] + "…"


class TimelineAnswer:
    """Answers one /timeline in a chat, as a reply to the message that asked."""

    def __init__(self, bot: Bot, door: Door, chat_id: int, reply_to: int, group: bool, heading: str = "") -> None:
        self.bot = bot
        self.door = door
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.interval = GROUP_SECONDS if group else PRIVATE_SECONDS
        self.heading = f"{heading}\n" if heading else ""  # such as "sorry for the delay", kept through the edits
        self.message_id: int | None = None

    async def run(self, request: Request) -> None:
        """Post the progress message, ask the core with a progress callback, then deliver the answer."""
        total = request.audio[0].duration if request.audio else None
        sent = await self.bot.send_message(
            self.chat_id,
            self.heading + render.escape(progress_text(0.0, total)),
            parse_mode=ParseMode.HTML,
            reply_parameters=ReplyParameters(self.reply_to, allow_sending_without_reply=True),
        )
        self.message_id = sent.message_id
        progress = Progress(lambda text: self._edit(render.escape(text)), self.interval, total)
        try:
            reply = await self.door.handle(dataclasses.replace(request, progress=progress, upload_limit=0))
        finally:
            await progress.close()
        await self._edit(answer_text(reply), final=True)
        timeline = reply.timeline
        if timeline is None:
            return
        name = request.audio[0].filename if request.audio else ""
        where = ReplyParameters(self.reply_to, allow_sending_without_reply=True)
        await self.bot.send_photo(
            self.chat_id,
            timeline.png,
            caption=photo_caption(reply),
            filename=output_name(name, ".png"),
            reply_parameters=where,
        )
        await self.bot.send_document(
            self.chat_id,
            timeline.srt.encode("utf-8"),
            caption="Subtitles: open them with the recording in any video player.",
            filename=output_name(name, ".srt"),
            reply_parameters=where,
        )

    async def _edit(self, html: str, final: bool = False) -> None:
        """Edit the progress message; the final text is sent anew if the message can't be edited any more."""
        assert self.message_id is not None
        try:
            await self.bot.edit_message_text(
                self.heading + html,
                chat_id=self.chat_id,
                message_id=self.message_id,
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        except BadRequest as exc:
            if "not modified" in exc.message.lower():
                return
            if not final:
                raise
            log.info("telegram: could not edit the timeline's progress message (%s); sending the answer", exc.message)
            await self.bot.send_message(
                self.chat_id,
                self.heading + html,
                parse_mode=ParseMode.HTML,
                reply_parameters=ReplyParameters(self.reply_to, allow_sending_without_reply=True),
            )
