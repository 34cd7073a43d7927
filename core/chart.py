"""A timeline chart as PNG: time across, the top labels down, score as colour; sized for a chat message."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.timeline import TimelineParams, clock, frame_cells

log = logging.getLogger(__name__)

WIDTH = 1000
ROW = 40  # pixels per label row
LEFT = 190  # label column
RIGHT = 20
TOP = 10
BOTTOM = 50  # time axis
# A light-to-dark blue ramp: score 0, 0.5 and 1.
RAMP = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def colour(score: float) -> tuple[int, int, int]:
    """The ramp's colour for a score in [0, 1]."""
    x = float(np.clip(score, 0, 1)) * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    r, g, b = RAMP[i] + (RAMP[i + 1] - RAMP[i]) * (x - i)
    return round(r), round(g), round(b)


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
    """text, shortened with an ellipsis to fit width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
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
    """PNG bytes of the top labels' (highest peak score) calibrated scores over the clip, WIDTH x (60 + 40 rows)."""
    from PIL import Image, ImageDraw

    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise ValueError("scores must be a (frames, labels) matrix with one column per label")
    params = params or TimelineParams()
    cells = frame_cells(len(scores), params, duration) if len(scores) else np.zeros((0, 2))
    peaks = scores.max(axis=0) if len(scores) else np.zeros(len(labels))
    rows = np.argsort(-peaks, kind="stable")[: max(0, top)]
    height = TOP + BOTTOM + ROW * len(rows)
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(13)
    plot = WIDTH - LEFT - RIGHT
    span = max(duration, 1e-9)

    def x(seconds: float) -> int:
        return LEFT + round(plot * min(max(seconds, 0.0), span) / span)

    for r, column in enumerate(rows):
        y0 = TOP + r * ROW
        for (begin, end), score in zip(cells, scores[:, column], strict=True):
            draw.rectangle([x(begin), y0 + 2, max(x(begin), x(end) - 1), y0 + ROW - 3], fill=colour(score))
        name = _fit(draw, labels[column], font, LEFT - 12)
        _text(draw, (LEFT - 8, y0 + ROW // 2), name, font, align="right")
    axis = TOP + ROW * len(rows)
    draw.line([LEFT, axis, WIDTH - RIGHT, axis], fill="black")
    step = tick_step(duration)
    for t in np.arange(0, duration + 1e-9, step):
        draw.line([x(t), axis, x(t), axis + 6], fill="black")
        _text(draw, (x(t), axis + 9), clock(t), small, align="top")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
