"""Finding the checkpoint: local directories and the cache need no network; an unreachable hub fails at once."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from core.checkpoint import locate
from core.errors import ModelLoadError

REPO = "someone/clap-checkpoint"


def test_a_local_directory_is_used_as_it_is(tiny_model_dir: Path) -> None:
    assert locate(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(ModelLoadError, match="not a directory holding a CLAP checkpoint"):
        locate(str(tiny_model_dir / "missing"))


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_cached_checkpoint_is_found_without_asking_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    commit = "a" * 40
    snapshot = tmp_path / "models--someone--clap-checkpoint" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--clap-checkpoint" / "refs").mkdir()
    (tmp_path / "models--someone--clap-checkpoint" / "refs" / "main").write_text(commit)
    with socket.socket() as hub:  # a hub that would notice a visit
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        hub.setblocking(False)
        found = locate(REPO, cache_dir=str(tmp_path), endpoint=f"http://127.0.0.1:{hub.getsockname()[1]}")
        with pytest.raises(BlockingIOError):
            hub.accept()  # nobody called
    assert Path(found) == snapshot


def test_an_unreachable_hub_is_reported_at_once_and_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError) as failed:
        locate(REPO, cache_dir=str(tmp_path), endpoint=f"http://127.0.0.1:{closed_port()}")
    took = time.monotonic() - started
    message = str(failed.value)
    assert took < 5.0, f"took {took:.1f} s"  # not half a minute of retries
    assert "can't be reached" in message and f"hf download {REPO}" in message and "--model" in message
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]  # no retry loop, no repeated warnings


def test_offline_without_the_checkpoint_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set") as failed:
        locate(REPO, cache_dir=str(tmp_path))
    assert "local directory" in str(failed.value)
