"""The one command table: every platform's help, menu and parser come from it, within each platform's limits."""

from __future__ import annotations

import re

import pytest

from adapters.console import parse_line
from adapters.telegram.translate import COMMANDS, MENU
from core.command_table import TABLE, Platform, Style, commands, entries, help_text, needs_admin, welcome_text
from core.config import ConsoleConfig
from core.messages import Command


def test_entries_fit_every_platforms_limits() -> None:
    for entry in TABLE:
        assert 1 <= len(entry.summary) <= 100, entry.name  # Discord's description limit (Telegram's is 256)
        assert all(1 <= len(o.description) <= 100 for o in entry.options), entry.name
        if entry.style is Style.SLASH:
            assert re.fullmatch(r"[a-z]{1,32}", entry.name), entry.name  # Telegram's and Discord's command names
        if entry.on(Platform.DISCORD) and entry.style is Style.SLASH:
            named = [o.name for o in entry.options]
            assert entry.usage[Platform.DISCORD].replace("[", "").replace("]", "").split() == named, entry.name


@pytest.mark.parametrize("platform", list(Platform))
def test_help_lists_every_command_of_a_platform_once_and_nothing_else(platform: Platform) -> None:
    lines = help_text(platform).splitlines()[1:]
    assert len(lines) == len(entries(platform))
    assert all(" — " in line and "  " not in line for line in lines)  # one a line, no columns of spaces
    text = help_text(platform)
    assert ("PATH" in text) == (platform is Platform.CONSOLE)
    assert ("Apps →" in text) == (platform is Platform.DISCORD)
    assert ("/play" in text) == (platform is not Platform.DISCORD)
    assert "/next" not in text or platform is Platform.CONSOLE
    assert "Hi!" in welcome_text(platform) and welcome_text(platform) != text


def test_every_listed_command_is_understood_where_it_is_listed() -> None:
    assert [name for name, _ in MENU] == [e.name for e in entries(Platform.TELEGRAM)]
    assert set(COMMANDS) >= {name for name, _ in MENU} | {"start", "s", "what"}
    config = ConsoleConfig()
    for entry in entries(Platform.CONSOLE):
        parsed = parse_line(f"/{entry.name} tone.wav x", config, "q1")
        assert not isinstance(parsed, str) or "Unknown command" not in parsed, entry.name
    assert commands(Platform.DISCORD)["labels"] is Command.LABELS and "play" not in commands(Platform.DISCORD)


def test_changes_need_an_admin() -> None:
    assert needs_admin(Command.LABELS, "add siren") and needs_admin(Command.LABELS, "remove siren")
    assert not needs_admin(Command.LABELS, "") and not needs_admin(Command.STATS, "")
    assert needs_admin(Command.REMOVE, "12")
