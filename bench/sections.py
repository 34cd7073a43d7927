"""The named sections of bench/RESULTS.md: each benchmark rewrites its own, between `<!-- NAME:start/end -->`."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = re.compile(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", re.DOTALL)


def block(name: str, body: str) -> str:
    """body between the markers of section name."""
    return f"<!-- {name}:start -->\n{body.rstrip()}\n<!-- {name}:end -->"


def replace_section(text: str, section: str) -> str:
    """text with the section of the same name as `section` (a whole block, markers included) replaced, or appended."""
    found = SECTION.fullmatch(section.strip())
    if found is None:
        raise ValueError("a section starts with <!-- NAME:start --> and ends with <!-- NAME:end -->")
    start, end = f"<!-- {found.group(1)}:start -->", f"<!-- {found.group(1)}:end -->"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        return head + section.strip() + rest.partition(end)[2]
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section.strip() + "\n"


def write_section(section: str, path: Path = RESULTS) -> None:
    """Replace (or append) one section of the results file, leaving the rest alone."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(replace_section(old, section), encoding="utf-8")


def keep_sections(old: str, new: str) -> str:
    """new with every section of old that new lacks carried over at its end (`make bench` rewrites the rest)."""
    kept = [m.group(0) for m in SECTION.finditer(old) if f"<!-- {m.group(1)}:start -->" not in new]
    return "\n\n".join([new.rstrip("\n"), *kept]) + "\n" if kept else new
