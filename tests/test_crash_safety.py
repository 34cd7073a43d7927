"""SIGKILL shira at random moments during bulk imports and bursts of console additions; nothing acknowledged is lost.

Each run is a real process (forked from a server that has already imported torch, see tests/forkserver.py), so a
kill costs a fraction of a second instead of a full start-up. Six lanes, each with its own data dir, run side by
side. After every kill a fresh process restarts shira on the data dir and checks it (tests/crash_harness.py):
every acknowledged addition is present and searchable, nothing is duplicated, FAISS holds exactly the samples
table's ids and vectors, PRAGMA integrity_check is ok and no half-written file is left. A last run without a kill
must then complete the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.files import HOST, PART_MAX_AGE, FileStore
from tests.crash_harness import Lane, make_sounds, write_config
from tests.forkserver import ForkServer

SEED = 20240606
KILLS_PER_LANE = 4
SOUNDS_PER_LANE = 24


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """One fork server for the module."""
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kills_never_lose_acknowledged_additions(server: ForkServer, tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "shira.toml", tiny_model_dir)
    kinds = ["index", "console"] * 3
    lanes = [
        Lane(server, kind, tmp_path / f"lane{i}-{kind}", sounds, config, seed=SEED + i)
        for i, kind in enumerate(kinds)
        for sounds in [make_sounds(tmp_path / f"sounds{i}", SOUNDS_PER_LANE, SEED + i)]
    ]

    def drive(lane: Lane) -> Lane:
        lane.kill_cycles(KILLS_PER_LANE, max_cycles=3 * KILLS_PER_LANE)
        lane.finish()
        return lane

    with ThreadPoolExecutor(len(lanes)) as pool:
        done = list(pool.map(drive, lanes))

    summary = {lane.root.name: (lane.kills, lane.mid_kills, len(lane.acked), lane.verified) for lane in done}
    for lane in done:
        assert lane.problems == [], f"{lane.root.name}: {lane.problems}"
    assert sum(lane.kills for lane in done) >= 20, summary
    assert sum(lane.mid_kills for lane in done) >= 10, f"too few kills landed mid-addition: {summary}"
    assert all(lane.verified == lane.cycles for lane in done), summary
    console_acks = sum(len(lane.acked) for lane in done if lane.kind == "console")
    assert console_acks == kinds.count("console") * SOUNDS_PER_LANE, summary


def test_half_written_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    """A kill during a file write leaves a .part file; the next start removes it, unless its writer still runs."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = tmp_path / "files"
    (root / "ab").mkdir(parents=True)
    orphan = root / "ab" / f".{'ab' * 32}.wav.1a2b3c4d.{int(dead.stdout)}.part"
    live = root / "ab" / f".{'ab' * 32}.wav.5e6f7a8b.{os.getpid()}.part"
    here = root / "ab" / f".{'ab' * 32}.wav.0a0b0c0d.{int(dead.stdout)}@{HOST}.part"
    # A shared directory: another machine's pids mean nothing here, so only an old part file of it is dead.
    elsewhere_fresh = root / "ab" / f".{'ab' * 32}.wav.1c1d1e1f.{int(dead.stdout)}@other-host.part"
    elsewhere_stale = root / "ab" / f".{'ab' * 32}.wav.2c2d2e2f.{os.getpid()}@other-host.part"
    for part in (orphan, live, here, elsewhere_fresh, elsewhere_stale):
        part.write_bytes(b"half")
    old = time.time() - PART_MAX_AGE - 60
    os.utime(elsewhere_stale, (old, old))
    FileStore(root)
    assert not orphan.exists() and live.exists() and not here.exists()
    assert elsewhere_fresh.exists() and not elsewhere_stale.exists()
