"""Architecture guards: the core never pulls in a chat platform."""

from __future__ import annotations

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
