"""The one writer: concurrent previews, ids never reused, failures after commit, sweeps, and other processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.audio import MB, Limits, decode
from core.config import Config
from core.engine import Engine
from core.messages import Command, ReplyKind, Request
from core.previews import Previews
from core.store import MIGRATIONS
from tests.conftest import make_config
from tests.library_checks import engine_problems, store_problems
from tests.support.sounds import chirp, encode, noise, tone

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(50 * MB, 600.0, 60.0)


def request(command: Command, text: str = "", user: str = "u1", **kw: object) -> Request:
    return Request("test", "s", user, command, text=text, **kw)  # type: ignore[arg-type]


def previews_on_disk(config: Config) -> list[Path]:
    return sorted(p for p in (Path(config.data_dir) / "previews").iterdir() if p.is_file())


async def test_twenty_concurrent_plays_of_a_new_sample_share_one_complete_preview(
    config: Config, tmp_path: Path
) -> None:
    sound = encode(chirp(6.0), tmp_path / "rising.wav").read_bytes()
    async with Engine.open(config, warm_labels=False) as engine:
        added = await engine.ingest.add("s", sound, "rising.wav", uploader="u1")
        asks = [
            request(Command.PLAY, str(added.sample_id), user=f"u{i}", upload_limit=10 * MB)
            if i % 2
            else request(Command.SEARCH, "rising", user=f"u{i}", upload_limit=10 * MB)
            for i in range(20)
        ]
        replies = await asyncio.gather(*(engine.handle(r) for r in asks))
        files = [r.audio.preview for r in replies if r.audio is not None]
        assert len(files) == 20 and all(f is not None for f in files), [r.text for r in replies]
        contents = {f.read_bytes() for f in files if f is not None}
        assert len(contents) == 1  # one encode, the same bytes for everyone
        audio = decode(contents.pop(), LIMITS)
        assert abs(audio.duration - 6.0) < 0.1
        assert [p.name for p in previews_on_disk(config)] == [files[0].name]  # no .part left behind
        assert {r.audio.filename for r in replies if r.audio} == {f"{added.sample_id}-rising.ogg"}

        removed = await engine.handle(request(Command.REMOVE, str(added.sample_id)))
        assert removed.kind is ReplyKind.REMOVED
        assert previews_on_disk(config) == []  # previews go with their sample


async def test_the_preview_cache_stays_under_its_cap(tmp_path: Path) -> None:
    previews = Previews(tmp_path / "previews", max_bytes=10_000, in_flight_seconds=0)

    async def make(size: int) -> object:
        async def write(path: Path) -> Path:
            path.write_bytes(b"x" * size)
            return path

        return write

    for i in range(8):
        await previews.get(f"{i:064x}", "ogg", 1000, await make(3000))  # type: ignore[arg-type]
        assert previews.size() <= 10_000
    names = sorted(p.name[:64] for p in previews.directory.iterdir())
    assert names == [f"{i:064x}" for i in (5, 6, 7)]  # the least recently made went first


async def test_a_failing_preview_fails_every_waiter_and_leaves_nothing(tmp_path: Path) -> None:
    previews = Previews(tmp_path / "previews", max_bytes=10_000)
    started = asyncio.Event()

    async def broken(path: Path) -> Path:
        started.set()
        await asyncio.sleep(0.05)
        raise OSError("disk full")

    first = asyncio.create_task(previews.get("a" * 64, "ogg", 1, broken))
    await started.wait()
    second = asyncio.create_task(previews.get("a" * 64, "ogg", 1, broken))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert list(previews.directory.iterdir()) == []


async def test_removed_ids_are_never_given_out_again_across_restarts(config: Config, tmp_path: Path) -> None:
    sounds = [encode(tone(0.5, 200 + 100 * i), tmp_path / f"t{i}.wav").read_bytes() for i in range(3)]
    async with Engine.open(config, warm_labels=False) as engine:
        ids = [(await engine.ingest.add("s", s, f"t{i}.wav")).sample_id for i, s in enumerate(sounds[:2])]
        await engine.library.remove("s", ids[1])
    async with Engine.open(config, warm_labels=False) as engine:
        again = await engine.ingest.add("s", sounds[1], "t1.wav")
        later = await engine.ingest.add("s", sounds[2], "t2.wav")
        assert again.sample_id > ids[1] and later.sample_id > again.sample_id
        reply = await engine.handle(request(Command.PLAY, str(ids[1])))
        assert reply.kind is ReplyKind.ERROR and f"#{ids[1]}" in reply.text


async def test_a_version_1_library_migrates_keeping_every_row_and_never_reuses_ids_after(
    config: Config, tmp_path: Path
) -> None:
    sounds = [encode(tone(0.5, 300 + 50 * i), tmp_path / f"t{i}.wav").read_bytes() for i in range(4)]
    async with Engine.open(config, warm_labels=False) as engine:
        ids = [(await engine.ingest.add("s", s, f"t{i}.wav")).sample_id for i, s in enumerate(sounds[:3])]
    db = sqlite3.connect(Path(config.data_dir) / "shira.db")
    # Turn the file back into a v1 database: the samples table without AUTOINCREMENT, no table of a later
    # version, user_version 1.
    later = [m.group(1) for m in re.finditer(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", "".join(MIGRATIONS[2:]))]
    db.executescript(
        "PRAGMA foreign_keys=OFF; BEGIN;"
        + "".join(f"DROP TABLE {name};" for name in later)
        + "CREATE TABLE old AS SELECT * FROM samples; DROP TABLE samples;"
        "CREATE TABLE samples (id INTEGER PRIMARY KEY, space_id INTEGER NOT NULL REFERENCES spaces(id) ON DELETE"
        " CASCADE, sha256 TEXT NOT NULL, ext TEXT NOT NULL, name TEXT NOT NULL, uploader TEXT NOT NULL DEFAULT '',"
        " description TEXT NOT NULL DEFAULT '', duration REAL NOT NULL, created_at REAL NOT NULL, source TEXT NOT"
        " NULL DEFAULT '', embedding BLOB NOT NULL, UNIQUE (space_id, sha256));"
        "INSERT INTO samples SELECT * FROM old; DROP TABLE old; CREATE INDEX samples_sha ON samples(sha256);"
        "DELETE FROM sqlite_sequence; COMMIT; PRAGMA user_version=1;"
    )
    counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("samples", "segments", "tags")]
    db.close()
    async with Engine.open(config, warm_labels=False) as engine:
        assert await engine.store.schema_version() == len(MIGRATIONS)  # type: ignore[attr-defined]
        db = engine.store.db  # type: ignore[attr-defined]
        after = [
            (await (await db.execute(f"SELECT count(*) FROM {t}")).fetchone())[0]
            for t in ("samples", "segments", "tags")
        ]
        assert after == counts  # dropping the old table cascaded into nothing
        await engine.library.remove("s", ids[2])  # the highest id
        fresh = await engine.ingest.add("s", sounds[3], "t3.wav")
        assert fresh.sample_id > ids[2]
        assert await engine_problems(engine) == []
        await engine.library.backfill_prints()  # what the start-up task does for samples older than fingerprints
    assert store_problems(Path(config.data_dir)) == []


async def test_an_index_failure_after_the_commit_still_answers_added(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sound = encode(tone(0.5, 440), tmp_path / "beep.wav")
    async with Engine.open(config, warm_labels=False) as engine:
        await engine.ingest.add("s", encode(noise(0.5), tmp_path / "n.wav").read_bytes(), "n.wav")

        def broken(*_: object) -> bool:
            raise RuntimeError("index exploded")

        monkeypatch.setattr(engine.indexes, "add", broken)
        from core.files import local_ref

        reply = await engine.handle(request(Command.ADD, audio=(local_ref(sound),)))
        assert reply.kind is ReplyKind.ADDED and reply.added is not None, reply.text
        monkeypatch.undo()
        hits, _ = await engine.searcher.search_text(("s",), "beep", 5)
        assert reply.added.sample_id in [h.sample_id for h in hits]  # the index was rebuilt on next use
        assert await engine_problems(engine) == []


async def test_the_startup_sweep_removes_files_no_row_refers_to(config: Config, tmp_path: Path) -> None:
    sound = encode(tone(0.5, 440), tmp_path / "beep.wav").read_bytes()
    async with Engine.open(config, warm_labels=False) as engine:
        kept = await engine.ingest.add("s", sound, "beep.wav")
    # What a kill between writing a file and committing its row leaves behind, plus a stray preview.
    orphan = Path(config.data_dir) / "files" / "ab" / ("ab" * 32 + ".wav")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"RIFF")
    stray = Path(config.data_dir) / "previews" / ("cd" * 32 + "-1000.ogg")
    stray.write_bytes(b"OggS")
    async with Engine.open(config, warm_labels=False) as engine:
        assert not orphan.exists() and not stray.exists()
        assert await engine.store.get_sample(kept.sample_id) is not None
    assert store_problems(Path(config.data_dir)) == []


async def test_concurrent_index_rebuilds_never_duplicate_a_sample(config: Config, tmp_path: Path) -> None:
    """Searches that all find the index stale, while additions commit, rebuild it once per change at most."""
    sounds = [encode(tone(0.3, 200 + 37 * i), tmp_path / f"t{i}.wav").read_bytes() for i in range(6)]
    async with Engine.open(config, warm_labels=False) as engine, Engine.open(config, warm_labels=False) as other:
        await engine.ingest.add("s", sounds[0], "t0.wav")
        vector = (await engine.store.sample_vectors([1]))[1]
        for i, sound in enumerate(sounds[1:], start=1):
            # another process changes the space, then many readers and one writer race here
            await other.ingest.add("s", sound, f"t{i}.wav")
            searches = [engine.searcher.search_vector(("s",), vector, "", 10, 0, "") for _ in range(5)]
            await asyncio.gather(*searches)
        assert await engine_problems(engine) == []


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_shira_index_in_another_process_while_this_one_adds_and_removes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "sounds"
    folder.mkdir()
    sounds = [encode(tone(0.4, 150 + 41 * i), folder / f"s{i:02d}.wav") for i in range(16)]
    config = make_config(tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"})
    toml = tmp_path / "shira.toml"
    toml.write_text(
        f'data_dir = "{config.data_dir}"\n[model]\nid = "{tiny_model_dir}"\nprecision = "fp32"\n'
        '[search]\nvocabulary = "none"\n[limits]\nrequests_per_minute = 0\n',
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    importer = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(toml), "index", "--json", "--space", "s", str(folder)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with Engine.open(config, warm_labels=False) as engine:
        for round_ in range(3):
            for path in sounds[round_ * 4 : round_ * 4 + 6]:  # the same content the importer is adding
                added = await engine.ingest.add("s", path.read_bytes(), path.name)
                if int(path.stem[1:]) % 3 == 0:
                    try:
                        await engine.library.remove("s", added.sample_id)
                    except Exception as exc:  # removed already by an earlier round
                        assert "no sound" in str(exc)
        out, err = await asyncio.to_thread(importer.communicate, timeout=200)
        assert importer.returncode == 0, err.decode()[-2000:]
        report = json.loads(out.decode().strip().splitlines()[-1])
        assert not report["failed"]
        await engine.library.sweep()
        assert await engine_problems(engine) == []
        ids, vectors = await engine.store.vectors("s")
        assert len(set(ids.tolist())) == len(ids) and np.isfinite(vectors).all()
    assert store_problems(Path(config.data_dir)) == []  # no orphan files after the sweep, every file hashes right
