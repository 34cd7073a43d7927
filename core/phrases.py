"""How people ask "what sound is this?", in one place for every adapter."""

from __future__ import annotations

import re

# Anywhere in a message: "what sound is this", "what's that noise?", "what is this", "identify"
ASKING = re.compile(
    r"\bwhat\b[^.!]*\b(?:sound|noise)\b|\bwhat(?:'s|’s|\s+is)\s+(?:this|that|it)\b|\bidentify\b",
    re.IGNORECASE,
)
# At the start of a line, followed by what to listen to: "what sound is this kick.wav", "what is this? x.ogg"
_LEADING = re.compile(
    r"^\s*(?:what\s+(?:sound|noise)\s+is\s+(?:this|that|it)|what(?:'s|’s|\s+is)\s+(?:this|that)(?:\s+(?:sound|noise))?"
    r"|identify)(?=$|[\s?:])[\s?:]*",
    re.IGNORECASE,
)


def asks_what_sound(text: str) -> bool:
    """Whether a message asks what a sound is."""
    return bool(ASKING.search(text))


def after_question(text: str) -> str | None:
    """What follows a leading "what sound is this?" (possibly ""), or None when the line doesn't start with one."""
    match = _LEADING.match(text)
    return None if match is None else text[match.end() :].strip()
