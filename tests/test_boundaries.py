"""Architecture guards: the core never pulls in a chat platform."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_does_not_import_platform_libraries() -> None:
    code = (
        "import sys, pkgutil, importlib, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'): importlib.import_module(m.name)\n"
        "import adapters.console, bot.cli\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('discord', 'telegram'))\n"
        "assert not bad, bad\n"
        "heavy = sorted(n for n in ('torch', 'transformers') if n in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_the_network_guard_refuses_non_loopback_addresses() -> None:
    import socket

    import pytest

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(AssertionError, match="network"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed, never contacted


# What adapters and the CLI may take from the core: the values that cross the door, typed errors, config, and
# pure helpers on those values. Everything else (store, library, search, encoder…) is behind handle().
DOOR_MODULES = {"core.messages", "core.config", "core.errors", "core.phrases", "core.command_table", "core.metrics"}
DOOR_NAMES = {
    "core.files": {"local_ref", "is_audio_name", "attachment_name"},
    "core.replies": {"hit_line", "exact_line", "count"},
    "core.cues": {"to_json"},
    "core.engine": {"Engine"},  # only the composition root in bot/ opens it
    "core.inbox": {
        "SqliteInbox",
        "open_inbox",
    },  # likewise; adapters get it as the narrow Inbox protocol of core.messages
    "core.migrate": {"migrate", "MigrateError"},  # `shira migrate` copies a store with no engine open
    "core.worker": {"serve"},  # `shira worker`: the model worker's own composition root, in bot/ only
}
COMPOSITION_ROOT_ONLY = {"core.engine", "core.inbox", "core.migrate", "core.worker"}


def _door_violations(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
            names = {alias.name for alias in node.names}
            allowed = DOOR_NAMES.get(node.module, set())
            if node.module in COMPOSITION_ROOT_ONLY and path.parts[-2] != "bot":
                allowed = set()
            if node.module not in DOOR_MODULES and not names <= allowed:
                found.append(f"{path.name}:{node.lineno} imports {sorted(names - allowed)} from {node.module}")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "core" for a in node.names):
            found.append(f"{path.name}:{node.lineno} imports the core as a module")
        elif isinstance(node, ast.Attribute) and node.attr != "handle":
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name in ("engine", "door"):
                found.append(f"{path.name}:{node.lineno} reaches past the door: {name}.{node.attr}")
    return found


def test_adapters_and_the_cli_use_only_the_one_door() -> None:
    files = sorted((ROOT / "adapters").rglob("*.py")) + sorted((ROOT / "bot").rglob("*.py"))
    assert len(files) > 8
    violations = [v for path in files for v in _door_violations(path)]
    assert violations == [], violations


def test_the_door_check_notices_a_side_door(tmp_path: Path) -> None:
    bad = tmp_path / "adapter.py"
    bad.write_text(
        "from core.library import Library\nfrom core.engine import Engine\n"
        "async def f(engine):\n    await engine.handle(1)\n    return await engine.preview(3)\n",
        encoding="utf-8",
    )
    assert len(_door_violations(bad)) == 3


def test_model_free_commands_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom bot.cli import main\n"
        f"assert main(['--data-dir', {str(tmp_path)!r}, 'stats', '--json']) == 0\n"
        f"assert main(['--data-dir', {str(tmp_path)!r}, 'remove', '3']) == 1\n"
        "heavy = sorted(n for n in ('torch', 'transformers') if n in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert '"samples": 0' in proc.stdout and "There is no sound #3" in proc.stderr
