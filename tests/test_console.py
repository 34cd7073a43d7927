"""The console adapter: in-process with streams, and as the `shira console` process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter, parse_line
from core.config import ConsoleConfig
from core.engine import Engine
from core.messages import Command, ReplyKind
from tests.support.sounds import chirp, encode, noise, tone

ROOT = Path(__file__).resolve().parents[1]


def test_parse_line_maps_every_command(tmp_path: Path) -> None:
    config = ConsoleConfig(space="lib", user="me")
    sound = encode(tone(0.5), tmp_path / "my sound.wav")
    assert parse_line("/search deep kick", config).command == Command.SEARCH  # type: ignore[union-attr]
    assert parse_line("thunder", config).text == "thunder"  # type: ignore[union-attr]
    added = parse_line(f'/add "{sound}" a test tone', config)
    assert added.command == Command.ADD and added.text == "a test tone"  # type: ignore[union-attr]
    assert added.audio[0].filename == "my sound.wav" and added.space == "lib"  # type: ignore[union-attr]
    what = parse_line(f'what sound is this "{sound}"?', config)
    assert what.command == Command.IDENTIFY  # type: ignore[union-attr]
    assert parse_line("/remove 3", config).text == "3"  # type: ignore[union-attr]
    assert parse_line("/next", config) == "Nothing to page through yet."
    assert parse_line("/next", config, "q1", 2).page == 2  # type: ignore[union-attr]
    assert "Unknown command" in parse_line("/frobnicate", config)  # type: ignore[operator]
    assert parse_line("   ", config) is None


async def test_console_session_in_process(engine: Engine, tmp_path: Path) -> None:
    a = encode(tone(1.0, 300), tmp_path / "hum.wav")
    b = encode(noise(1.0), tmp_path / "hiss.flac")
    c = encode(chirp(2.0), tmp_path / "sweep.ogg")
    lines = [
        f"/add {a} low hum",
        f"/add {b}",
        f"/add {c} rising sweep",
        f"/add {a}",
        "/search hum",
        "/next",
        f"what sound is this {c}",
        "/play 1",
        "/stats",
        "/remove 2",
        "/nonsense",
        f"/add {tmp_path}/nope.wav",
        "/add /dev/zero",
    ]
    out = io.StringIO()
    console = ConsoleAdapter(
        engine, ConsoleConfig(space="c"), stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out, prompt=False
    )
    replies = []
    for line in lines:
        replies.append(await console.answer(line))
    text = out.getvalue()
    assert [r.kind for r in replies[:4]] == [ReplyKind.ADDED] * 4
    assert replies[3].added.duplicate and "Already in the library as #1" in text  # type: ignore[union-attr]
    assert replies[4].hits[0].name == "hum.wav" and replies[5].page == 1
    assert replies[6].kind == ReplyKind.IDENTIFY and "This sounds like:" in text
    assert replies[7].kind == ReplyKind.AUDIO and "file: " in text
    assert "3 sounds" in text and "Removed #2 hiss.flac." in text
    assert "Unknown command /nonsense" in text
    assert replies[11].kind == ReplyKind.ERROR and "nope.wav is not a file I can read" in text
    assert replies[12].kind == ReplyKind.ERROR and "/dev/zero is not a file I can read" in text
    assert await engine.store.count("c") == 2


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_shira_console_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    sound = encode(tone(1.0, 500), tmp_path / "beep.wav")
    script = f"/add {sound} a short beep\n/search beep\n/stats\n/quit\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "d"), "--model", str(tiny_model_dir), "console"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Added #1 beep.wav (1.0 s)." in proc.stdout
    assert 'Results for "beep":\n1. #1 beep.wav' in proc.stdout
    assert "1 sound, " in proc.stdout and "from 1 person" in proc.stdout
