"""Timeline events as subtitle cues (SRT, WebVTT) and JSON, and parsers to read SRT and WebVTT back."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from core.timeline import Event

_CUE_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{3})")
_TIMING = re.compile(rf"^\s*({_CUE_TIME.pattern})\s*-->\s*({_CUE_TIME.pattern})")


def _stamp(seconds: float, separator: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT), rounded to the millisecond."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _one_line(text: str) -> str:
    """A cue's text on one line and without an arrow, so it can't end or fake a cue."""
    return " ".join(text.split()).replace("-->", "->")


def to_srt(events: Sequence[Event]) -> str:
    """SubRip cues, numbered from 1; overlapping events stay separate cues."""
    blocks = [
        f"{n}\n{_stamp(e.start, ',')} --> {_stamp(e.end, ',')}\n{_one_line(e.label)}\n"
        for n, e in enumerate(events, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(events: Sequence[Event]) -> str:
    """WebVTT cues, with the label escaped as cue text."""
    blocks = [
        f"{_stamp(e.start, '.')} --> {_stamp(e.end, '.')}\n{html.escape(_one_line(e.label), quote=False)}\n"
        for e in events
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def to_json(events: Sequence[Event], duration: float) -> dict[str, Any]:
    """{"duration": s, "events": [{"label", "start", "end", "score"}]}, times in seconds to the millisecond."""
    return {
        "duration": round(float(duration), 3),
        "events": [
            {"label": e.label, "start": round(e.start, 3), "end": round(e.end, 3), "score": round(e.score, 4)}
            for e in events
        ],
    }


def _seconds(match: re.Match[str], first: int) -> float:
    hours, minutes, secs, millis = (match.group(first + i) for i in range(4))
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def _cues(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of every block holding a timing line; lines after it are the cue text."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n").strip()):
        lines = block.split("\n")
        for i, line in enumerate(lines):
            match = _TIMING.match(line)
            if match:
                out.append((_seconds(match, 2), _seconds(match, 7), "\n".join(lines[i + 1 :])))
                break
    return out


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each SubRip cue, in file order."""
    return _cues(text)


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each WebVTT cue, in file order; raises ValueError without the WEBVTT header."""
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("not a WebVTT file: it must start with WEBVTT")
    return [(start, end, html.unescape(cue)) for start, end, cue in _cues(text)]
