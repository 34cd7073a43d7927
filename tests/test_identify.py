"""Exact identification through the door: stored with each addition, matched on "what sound is this?", removed
with its sample, backfilled for older libraries, and the `shira identify` JSON lines."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.audio import decode
from core.config import Config
from core.engine import Engine
from core.files import local_ref
from core.fingerprint import FRAME_SECONDS, HEADER, THRESHOLD, decide, query_fingerprint
from core.jobs import Priority
from core.messages import Command, ReplyKind, Request
from tests.library_checks import store_problems
from tests.support.sounds import SR, encode

ROOT = Path(__file__).resolve().parents[1]


def melody(seconds: float, seed: int) -> np.ndarray:
    """A sound with structure at every moment: random notes with harmonics, clicks and a little noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), np.float32)
    t = np.arange(int(0.25 * SR)) / SR
    for start in range(0, len(out) - len(t), len(t)):
        freq = rng.uniform(200, 3000)
        note = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * np.exp(-4 * t)
        out[start : start + len(t)] += (0.3 * note).astype(np.float32)
    out += 0.01 * rng.standard_normal(len(out)).astype(np.float32)
    return np.clip(out, -1, 1)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1001) -> np.ndarray:
    """x plus white noise at this signal-to-noise ratio."""
    noise = np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
    scale = np.sqrt(np.mean(x**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return np.clip(x + scale * noise, -1, 1).astype(np.float32)


def identify(path: Path, space: str = "s") -> Request:
    return Request("test", space, "u1", Command.IDENTIFY, audio=(local_ref(path),))


@pytest.fixture
async def library(config: Config, tmp_path: Path) -> tuple[Engine, dict[str, int], dict[str, np.ndarray]]:
    signals = {f"song{i}": melody(8.0, seed=i) for i in range(3)}
    async with Engine.open(config, warm_labels=False) as engine:
        ids = {}
        for name, signal in signals.items():
            data = encode(signal, tmp_path / f"{name}.wav").read_bytes()
            ids[name] = (await engine.ingest.add("s", data, f"{name}.wav")).sample_id
        yield engine, ids, signals


async def test_an_excerpt_is_identified_with_its_offset(library: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    engine, ids, signals = library
    start = 3.2
    excerpt = signals["song1"][int(start * SR) : int((start + 2.0) * SR)]
    reply = await engine.handle(identify(encode(excerpt, tmp_path / "clean.wav")))
    assert reply.kind is ReplyKind.IDENTIFY and reply.exact is not None, reply.text
    assert reply.exact.sample_id == ids["song1"] and reply.exact.name == "song1.wav"
    assert abs(reply.exact.offset - start) <= FRAME_SECONDS + 1e-6  # right to one frame
    assert reply.text.startswith(f"That's #{ids['song1']} song1.wav, from 0:03")
    assert reply.labels and reply.hits  # the labels and the similar sounds follow

    noisy = with_noise(signals["song2"][int(1.0 * SR) : int(3.5 * SR)], snr_db=20)
    reply = await engine.handle(identify(encode(noisy, tmp_path / "noisy.wav")))
    assert reply.exact is not None and reply.exact.sample_id == ids["song2"], reply.text
    assert abs(reply.exact.offset - 1.0) < 0.05


async def test_a_match_the_landmarks_leave_open_is_confirmed_by_the_samples_own_audio(
    library: tuple, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    engine, ids, signals = library
    faint = with_noise(signals["song1"][int(2.0 * SR) : int(3.5 * SR)], snr_db=0, seed=1002)
    path = encode(faint, tmp_path / "faint.wav")
    heard = decode(path.read_bytes(), engine.encoder.add_limits)
    matches = engine.library.prints.match(("s",), query_fingerprint(heard.samples))
    assert matches and matches[0].sample_id == ids["song1"] and decide(matches) is None  # landmarks alone: open
    reply = await engine.handle(identify(path))
    assert reply.exact is not None and reply.exact.sample_id == ids["song1"], reply.text  # its audio settles it
    assert abs(reply.exact.offset - 2.0) <= FRAME_SECONDS + 1e-6 and reply.exact.confidence >= THRESHOLD

    row = await engine.store.get_sample(ids["song1"])
    engine.library.files.path(row.sha256, row.ext).unlink()  # the original is gone: the landmarks alone decide
    reply = await engine.handle(identify(path))
    assert reply.kind is ReplyKind.IDENTIFY and reply.exact is None, reply.text
    assert reply.hits  # and the rest of the answer is still there


async def test_a_bulk_import_leaves_open_matches_to_the_landmarks(library: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    engine, ids, signals = library
    added = {}
    for priority, seed in ((Priority.ADD, 1002), (Priority.BULK, 1003)):
        faint = with_noise(signals["song1"][int(2.0 * SR) : int(3.5 * SR)], snr_db=0, seed=seed)
        heard = decode(encode(faint, tmp_path / "f.wav").read_bytes(), engine.encoder.add_limits)
        assert decide(engine.library.prints.match(("s",), query_fingerprint(heard.samples))) is None  # open
        data = (tmp_path / "f.wav").read_bytes()
        added[priority] = await engine.ingest.add("s", data, f"faint{seed}.wav", priority=priority)
    assert added[Priority.ADD].same_as is not None and added[Priority.ADD].same_as.sample_id == ids["song1"]
    assert added[Priority.BULK].same_as is None and not added[Priority.BULK].duplicate  # added all the same


async def test_a_sound_not_in_the_library_has_no_exact_match(library: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    engine, _, _ = library
    for i, other in enumerate([melody(3.0, seed=99), with_noise(np.zeros(SR * 2, np.float32) + 1e-3, 0, seed=1234)]):
        reply = await engine.handle(identify(encode(other, tmp_path / f"other{i}.wav")))
        assert reply.kind is ReplyKind.IDENTIFY and reply.exact is None, reply.text
        assert not reply.text.startswith("That's")


async def test_a_re_recording_is_reported_on_add(library: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    engine, ids, signals = library
    copy = with_noise(signals["song0"][: int(5 * SR)], snr_db=15) * 0.7
    reply = await engine.handle(
        Request("test", "s", "u2", Command.ADD, audio=(local_ref(encode(copy, tmp_path / "phone.wav")),))
    )
    assert reply.kind is ReplyKind.ADDED and reply.added is not None and not reply.added.duplicate
    assert reply.added.same_as is not None and reply.added.same_as.sample_id == ids["song0"], reply.text
    assert f"recording of #{ids['song0']}" in reply.text


async def test_fingerprints_go_with_their_sample(library: tuple, tmp_path: Path, config: Config) -> None:  # type: ignore[type-arg]
    engine, ids, signals = library
    excerpt = encode(signals["song1"][SR : 3 * SR], tmp_path / "x.wav")
    assert (await engine.handle(identify(excerpt))).exact is not None
    removed = await engine.handle(Request("test", "s", "u1", Command.REMOVE, str(ids["song1"]), is_admin=True))
    assert removed.kind is ReplyKind.REMOVED
    reply = await engine.handle(identify(excerpt))
    assert reply.exact is None or reply.exact.sample_id != ids["song1"]
    db = sqlite3.connect(Path(config.data_dir) / "shira.db")
    assert db.execute("SELECT count(*) FROM fingerprints WHERE sample_id = ?", (ids["song1"],)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM fingerprints").fetchone()[0] == 2
    db.close()
    assert store_problems(Path(config.data_dir)) == []


async def test_older_samples_are_fingerprinted_at_start(config: Config, tmp_path: Path) -> None:
    signal = melody(6.0, seed=5)
    async with Engine.open(config, warm_labels=False) as engine:
        sample_id = (
            await engine.ingest.add("s", encode(signal, tmp_path / "old.wav").read_bytes(), "old.wav")
        ).sample_id
    db = sqlite3.connect(Path(config.data_dir) / "shira.db")
    db.execute("DELETE FROM fingerprints")  # as a library from before fingerprints
    db.commit()
    db.close()
    async with Engine.open(config, model=False) as engine:  # no model: no start-up backfill either
        assert await engine.store.fingerprint_count("s") == 0  # type: ignore[attr-defined]
        assert await engine.library.backfill_prints() == 1
        assert await engine.library.backfill_prints() == 0  # resumable: nothing is done twice
        assert await engine.store.fingerprint_count("s") == 1  # type: ignore[attr-defined]
    async with Engine.open(config, warm_labels=False) as engine:
        excerpt = encode(signal[2 * SR : 4 * SR], tmp_path / "q.wav")
        reply = await engine.handle(identify(excerpt))
        assert reply.exact is not None and reply.exact.sample_id == sample_id, reply.text
    assert store_problems(Path(config.data_dir)) == []


async def test_prints_of_older_parameters_are_made_again(config: Config, tmp_path: Path) -> None:
    signal = melody(6.0, seed=6)
    async with Engine.open(config, warm_labels=False) as engine:
        sample_id = (
            await engine.ingest.add("s", encode(signal, tmp_path / "old.wav").read_bytes(), "old.wav")
        ).sample_id
    db = sqlite3.connect(Path(config.data_dir) / "shira.db")
    (blob,) = db.execute("SELECT data FROM fingerprints WHERE sample_id = ?", (sample_id,)).fetchone()
    assert blob[:4] == HEADER
    db.execute("UPDATE fingerprints SET data = ?", (b"SFP1" + blob[4:],))  # as written with version 1's parameters
    db.commit()
    db.close()
    async with Engine.open(config, model=False) as engine:
        library = engine.library
        await library.ensure_prints("s")
        assert sample_id not in library.prints.entries["s"].index  # a stale print is not matched against
        assert await library.backfill_prints() == 1
        assert await library.backfill_prints() == 0  # resumable: nothing is done twice
        assert sample_id in library.prints.entries["s"].index
        # applied in place: the index is still in step with the store, so it isn't rebuilt
        assert library.prints.fresh("s", await engine.store.revision("s"), await engine.store.fingerprint_count("s"))
    db = sqlite3.connect(Path(config.data_dir) / "shira.db")
    (again,) = db.execute("SELECT data FROM fingerprints WHERE sample_id = ?", (sample_id,)).fetchone()
    db.close()
    assert again[:4] == HEADER
    async with Engine.open(config, warm_labels=False) as engine:
        reply = await engine.handle(identify(encode(signal[2 * SR : 4 * SR], tmp_path / "q.wav")))
        assert reply.exact is not None and reply.exact.sample_id == sample_id, reply.text
    assert store_problems(Path(config.data_dir)) == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_shira_identify_prints_one_json_line_per_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    songs = [encode(melody(6.0, seed=i), tmp_path / f"song{i}.wav") for i in range(2)]
    excerpt = encode(melody(6.0, seed=1)[2 * SR : 4 * SR], tmp_path / "excerpt.wav")
    stranger = encode(melody(3.0, seed=42), tmp_path / "stranger.wav")
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(b"OggS" + bytes(200))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "bot", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir)]
    subprocess.run(
        [*base, "index", "--space", "s", "--json", *map(str, songs)], env=env, cwd=ROOT, check=True, capture_output=True
    )
    done = subprocess.run(
        [*base, "identify", "--space", "s", "--json", str(excerpt), str(broken), str(stranger)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [line["file"] for line in lines] == [str(excerpt), str(broken), str(stranger)]
    first, bad, unknown = lines
    assert set(first) == {"file", "exact", "labels", "results"}
    assert first["exact"]["name"] == "song1.wav" and abs(first["exact"]["offset"] - 2.0) < 0.05
    assert set(first["exact"]) == {"id", "name", "offset", "confidence"} and 0 < first["exact"]["confidence"] <= 1
    assert all(set(r) == {"id", "name", "score", "start", "end"} for r in first["results"]) and first["results"]
    assert all(set(lb) == {"label", "score"} for lb in first["labels"])
    assert set(bad) == {"file", "error"} and "decode" in bad["error"]
    assert unknown["exact"] is None
    assert done.returncode == 1  # one file failed; the others still ran
