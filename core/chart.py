"""A timeline chart as PNG: time across, the top labels down, score as colour; sized for a chat message."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.timeline import TimelineParams, clock, events, frame_cells

log = logging.getLogger(__name__)

WIDTH = 1000
ROW = 40  # pixels per label row
LEFT = 250  # label column
RIGHT = 24
TOP = 10
BOTTOM = 50  # time axis
LABEL_FONT, TICK_FONT = 22, 18  # readable when a chat client shows the picture at half size
EVENT_BAR = 6  # pixels: a found event, drawn along the bottom of its row, at least MIN_EVENT pixels wide
MIN_EVENT = 3
EVENT = (230, 85, 13)  # orange against the blue ramp
# A light-to-dark blue ramp: score 0, 0.5 and 1.
RAMP = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def colour(score: float) -> tuple[int, int, int]:
    """The ramp's colour for a score in [0, 1]."""
    x = float(np.clip(score, 0, 1)) * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    r, g, b = RAMP[i] + (RAMP[i + 1] - RAMP[i]) * (x - i)
    return round(r), round(g), round(b)


def colours(scores: np.ndarray) -> np.ndarray:
    """The ramp's colours (uint8 RGB) for an array of scores in [0, 1]."""
    x = np.clip(np.asarray(scores, dtype=np.float64), 0, 1) * (len(RAMP) - 1)
    i = np.minimum(x.astype(int), len(RAMP) - 2)
    rgb = RAMP[i] + (RAMP[i + 1] - RAMP[i]) * (x - i)[..., None]
    return np.round(rgb).astype(np.uint8)


def columns(cells: np.ndarray, scores: np.ndarray, width: int, duration: float) -> np.ndarray:
    """Each pixel column's score per label: the highest of the frames whose cells start in it or cover its middle,
    so a short sound in a long recording keeps its column and a long frame fills all of its columns."""
    span = max(duration, 1e-9)
    middles = (np.arange(width) + 0.5) / width * span
    covering = np.clip(np.searchsorted(cells[:, 1], middles, side="right"), 0, len(cells) - 1)
    out = scores[covering]
    first = np.clip((cells[:, 0] / span * width).astype(int), 0, width - 1)
    starts, at = np.unique(first, return_index=True)
    out[starts] = np.maximum(out[starts], np.maximum.reduceat(scores, at, axis=0))
    return out


def tick_step(duration: float, most: int = 10) -> int:
    """The smallest round tick step (seconds) giving at most `most` intervals."""
    return next((s for s in TICK_STEPS if duration / s <= most), TICK_STEPS[-1])


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """text, or its part before the first comma ("Male speech, man speaking"), or shortened with an ellipsis."""
    if draw.textlength(text, font=font) <= width:
        return text
    head = text.split(",")[0].strip()
    if head and draw.textlength(head, font=font) <= width:
        return head
    text = head or text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _text(draw: Any, at: tuple[int, int], text: str, font: Any, align: str) -> None:
    """Draw text right-aligned and centred on at ("right"), or centred below it ("top"); works with bitmap fonts."""
    left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
    if align == "right":
        xy = (at[0] - right, at[1] - (upper + lower) // 2)
    else:
        xy = (at[0] - (left + right) // 2, at[1] - upper)
    draw.text(xy, text, fill="black", font=font)


def timeline_png(
    scores: np.ndarray,
    labels: Sequence[str],
    duration: float,
    top: int = 8,
    params: TimelineParams | None = None,
) -> bytes:
    """PNG bytes, WIDTH x (60 + 40 rows): the calibrated scores over the clip of the labels heard longest (events
    found), then of the highest-scoring, with each found event marked along the bottom of its row."""
    from PIL import Image, ImageDraw

    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise ValueError("scores must be a (frames, labels) matrix with one column per label")
    params = params or TimelineParams()
    found = events(scores, labels, params, duration) if len(scores) else []
    heard = np.zeros(len(labels))
    index = {label: i for i, label in enumerate(labels)}
    for event in found:
        heard[index[event.label]] += event.end - event.start
    peaks = scores.max(axis=0) if len(scores) else np.zeros(len(labels))
    rows = np.lexsort((-peaks, -heard))[: max(0, top)]
    height = TOP + BOTTOM + ROW * len(rows)
    image = Image.new("RGB", (WIDTH, height), "white")
    plot = WIDTH - LEFT - RIGHT
    if len(scores) and len(rows):
        cells = frame_cells(len(scores), params, duration)
        strip = colours(columns(cells, scores[:, rows], plot, duration).T)  # (rows, plot, 3)
        band = np.repeat(strip, ROW - 4, axis=0).reshape(len(rows), ROW - 4, plot, 3)
        for r in range(len(rows)):
            image.paste(Image.fromarray(band[r]), (LEFT, TOP + r * ROW + 2))
    draw = ImageDraw.Draw(image)
    font, small = _font(LABEL_FONT), _font(TICK_FONT)
    span = max(duration, 1e-9)

    def x(seconds: float) -> int:
        return LEFT + round(plot * min(max(seconds, 0.0), span) / span)

    where = {int(column): r for r, column in enumerate(rows)}
    for event in found:
        row = where.get(index[event.label])
        if row is not None:
            bottom = TOP + (row + 1) * ROW - 3
            left = min(x(event.start), WIDTH - RIGHT - MIN_EVENT)
            right = max(left + MIN_EVENT, x(event.end)) - 1
            draw.rectangle([left, bottom - EVENT_BAR + 1, right, bottom], EVENT)
    for r, column in enumerate(rows):
        name = _fit(draw, labels[column], font, LEFT - 14)
        _text(draw, (LEFT - 8, TOP + r * ROW + ROW // 2), name, font, align="right")
    axis = TOP + ROW * len(rows)
    draw.line([LEFT, axis, WIDTH - RIGHT, axis], fill="black")
    step = tick_step(duration, most=8)
    for t in np.arange(0, duration + 1e-9, step):
        draw.line([x(t), axis, x(t), axis + 6], fill="black")
        half = draw.textlength(clock(t), font=small) / 2
        _text(draw, (round(min(x(t), WIDTH - 2 - half)), axis + 9), clock(t), small, align="top")
    _legend(draw, image, axis + 12, small)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _legend(draw: Any, image: Any, y: int, font: Any) -> None:
    """Under the labels: the score ramp from 0 to 1, and the event mark."""
    from PIL import Image

    ramp = colours(np.linspace(0, 1, 80))[None, :, :].repeat(12, axis=0)
    image.paste(Image.fromarray(ramp), (28, y + 4))
    _text(draw, (24, y + 10), "0", font, align="right")
    draw.text((112, y + 10 - 9), "1", fill="black", font=font)
    draw.rectangle([140, y + 7, 160, y + 7 + EVENT_BAR - 1], EVENT)
    draw.text((166, y + 10 - 9), "event", fill="black", font=font)
