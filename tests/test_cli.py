"""The `shira` command line as a process: index, search, similar, labels, stats, remove, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.sounds import chirp, click, encode, noise, tone

ROOT = Path(__file__).resolve().parents[1]


def shira(data: Path, model: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bot", "--data-dir", str(data), "--model", str(model), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"shira {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixed folder: synthetic sounds in several formats, nested, plus undecodable files."""
    root = tmp_path_factory.mktemp("library")
    (root / "drums" / "deep").mkdir(parents=True)
    encode(tone(1.0, 60), root / "drums" / "deep" / "kick_low.wav")
    encode(noise(0.5, seed=1), root / "drums" / "snare_bright.flac")
    encode(chirp(12.0), root / "sweep_up.ogg")
    encode(tone(2.0, 880), root / "beep_high.mp3")
    encode(click(), root / "click.opus")
    (root / "broken.ogg").write_bytes(b"OggS" + os.urandom(300))
    (root / "notes.mp3").write_text("this is not audio")
    (root / "README.txt").write_text("ignored: not an audio extension")
    return root


def test_help_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    for command in ("index", "search", "similar", "labels", "stats", "remove", "console", "run"):
        assert command in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_index_search_similar_labels_stats_remove(tmp_path: Path, library: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "data"
    first = json.loads(shira(data, tiny_model_dir, "index", str(library), "--space", "lib", "--json").stdout)
    assert first["added"] == 5 and first["duplicates"] == 0
    assert sorted(Path(f["path"]).name for f in first["failed"]) == ["broken.ogg", "notes.mp3"]
    assert all(f["error"] for f in first["failed"])

    again = json.loads(shira(data, tiny_model_dir, "index", str(library), "--space", "lib", "--json").stdout)
    assert again == {"added": 0, "duplicates": 5, "failed": again["failed"]} and len(again["failed"]) == 2

    results = json.loads(shira(data, tiny_model_dir, "search", "kick", "--space", "lib", "-k", "3", "--json").stdout)
    assert len(results["results"]) == 3
    for hit in results["results"]:
        assert {"id", "name", "score", "start", "end"} <= hit.keys()
    assert results["results"][0]["name"] == "kick_low.wav"  # hybrid: the name matches

    target = library / "sweep_up.ogg"
    similar = json.loads(shira(data, tiny_model_dir, "similar", str(target), "--space", "lib", "--json").stdout)
    assert similar["results"][0]["name"] == "sweep_up.ogg"
    assert similar["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)

    labels = json.loads(shira(data, tiny_model_dir, "labels", str(target), "--json", "-k", "4").stdout)
    assert len(labels["labels"]) == 4 and all({"label", "score"} == set(x) for x in labels["labels"])

    stats = json.loads(shira(data, tiny_model_dir, "stats", "--space", "lib", "--json").stdout)
    assert stats["samples"] == 5 and stats["space"] == "lib"

    sample_id = similar["results"][0]["id"]
    shira(data, tiny_model_dir, "remove", str(sample_id), "--space", "lib")
    stats = json.loads(shira(data, tiny_model_dir, "stats", "--space", "lib", "--json").stdout)
    assert stats["samples"] == 4
    missing = shira(data, tiny_model_dir, "remove", str(sample_id), "--space", "lib", check=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"shira: There is no sound #{sample_id} in this library."


def test_bad_model_path_says_how_to_fix(tmp_path: Path) -> None:
    proc = shira(tmp_path / "d", tmp_path / "missing-model", "search", "x", check=False)
    assert proc.returncode == 3 and "HF_HUB_OFFLINE" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killed_index_run_resumes_without_loss_or_duplicates(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        encode(tone(0.5 + (i % 5) * 0.3, 100 + 37 * i), folder / f"tone_{i:02d}.wav")
    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "bot",
        "--data-dir",
        str(data),
        "--model",
        str(tiny_model_dir),
        "index",
        str(folder),
        "--space",
        "k",
        "--json",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = data / "shira.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some, but not all, files are in
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    n = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n >= 3:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with sqlite3.connect(db) as conn:
        partial = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert 3 <= partial <= 24

    rerun = json.loads(shira(data, tiny_model_dir, "index", str(folder), "--space", "k", "--json").stdout)
    assert rerun["added"] + rerun["duplicates"] == 24 and rerun["duplicates"] == partial and not rerun["failed"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*), count(DISTINCT sha256) FROM samples").fetchone() == (24, 24)
        assert conn.execute("SELECT count(*) FROM samples_fts").fetchone()[0] == 24
    stats = json.loads(shira(data, tiny_model_dir, "search", "tone", "--space", "k", "-k", "50", "--json").stdout)
    assert len(stats["results"]) == 24
