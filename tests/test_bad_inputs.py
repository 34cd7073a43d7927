"""A generated corpus of bad and odd inputs, through /add and through `shira index --json`.

Each case is either accepted and indexed correctly (right duration, stored byte for byte, searchable, in FAISS) or
rejected with a message naming the reason. Nothing crashes, nothing half-written is left behind, and a playlist
never makes ffmpeg open the local "canary" file it points at (watched with inotify; the canary is valid audio, so
following the playlist would also have made the addition succeed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main as shira_main
from core.audio import Limits, decode
from core.config import Config
from core.engine import Engine
from core.messages import AudioRef, Command, ReplyKind, Request
from tests.conftest import make_config
from tests.library_checks import engine_problems, searchable_problems, store_problems
from tests.support.sounds import click, encode, ffmpeg_exe, noise, tone

IN_ACCESS, IN_OPEN = 0x01, 0x20
WEIRD_NAME = 'it\'s "weird" $(touch PWNED) `touch PWNED` .. ; 音 é ☃.wav'
HOSTILE_REF_NAME = "../../../tmp/$(touch PWNED)/..\\..\\hostile 'q' \"x\" 音.wav"


@dataclass(frozen=True)
class Case:
    """One input and what must happen to it."""

    path: Path
    accept: tuple[float, float] | None = None  # accepted with a duration in this range (seconds)
    reason: str | None = None  # rejected with a message containing this
    filename: str | None = None  # the name a chat platform reports, when not the file's own
    word: str = ""  # a word of the file name that a search must find it by (default: the first)

    def search_word(self) -> str:
        """The word a name search must find this case by."""
        return self.word or self.path.stem.replace("_", " ").split()[0]


class FileWatch:
    """inotify on one file: counts every open or read of it, by any process."""

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self.libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")

    def events(self) -> int:
        """Events since the last call."""
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                count += 1

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


def build_corpus(root: Path) -> tuple[list[Case], Path]:
    """Write every case under root/corpus; playlists and their canary go in root/canary. Returns (cases, canary)."""
    corpus, side = root / "corpus", root / "canary"
    corpus.mkdir()
    side.mkdir()
    cases: list[Case] = []

    empty = corpus / "empty.wav"
    empty.write_bytes(b"")
    cases.append(Case(empty, reason="empty"))

    garbage = corpus / "garbage.mp3"
    garbage.write_bytes(np.random.default_rng(6).bytes(20_000))
    cases.append(Case(garbage, reason="not in an audio format"))

    text = corpus / "notes.ogg"
    text.write_text("These are meeting notes, not a recording.\n" * 40, encoding="utf-8")
    cases.append(Case(text, reason="not in an audio format"))

    whole = encode(noise(10.0, seed=3), root / "whole.ogg")
    truncated = corpus / "truncated.ogg"
    truncated.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.3)])
    cases.append(Case(truncated, accept=(0.5, 3.5), reason="incomplete or damaged"))  # either is right

    wav = bytearray(encode(tone(1.0, 523), root / "plain.wav").read_bytes())
    data_at = wav.find(b"data")
    wav[4:8] = struct.pack("<I", 0xFFFFFFF0)
    wav[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFFF0)
    huge = corpus / "huge_header.wav"
    huge.write_bytes(bytes(wav))
    cases.append(Case(huge, accept=(0.99, 1.01)))

    bomb = corpus / "bomb.flac"  # three hours of silence in ~150 kB
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono", "-t", "10800", "-c:a", "flac", str(bomb))
    cases.append(Case(bomb, reason="longer than"))

    surround = corpus / "surround.wav"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=96000:duration=1",
        "-ac",
        "6",
        "-c:a",
        "pcm_s24le",
        str(surround),
    )
    cases.append(Case(surround, accept=(0.99, 1.01)))

    ulaw = corpus / "ulaw.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=1", "-c:a", "pcm_mulaw", str(ulaw))
    cases.append(Case(ulaw, accept=(0.99, 1.01)))

    video = corpus / "video.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10:duration=1.5",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=500:duration=1.5",
        "-c:v",
        "mpeg4",
        "-c:a",
        "aac",
        "-shortest",
        str(video),
    )
    cases.append(Case(video, accept=(1.4, 1.6)))

    cases.append(Case(encode(click(0.01), corpus / "click.wav"), accept=(0.009, 0.011)))
    cases.append(Case(encode(tone(1.0, 330), corpus / "flac_named.mp3", fmt="flac"), accept=(0.99, 1.01)))
    cases.append(Case(encode(chirp_like(), corpus / WEIRD_NAME, fmt="wav"), accept=(0.99, 1.01), word="weird"))

    canary = encode(tone(1.5, 660), side / "canary.wav")
    playlists = {
        "relative.ffconcat": "ffconcat version 1.0\nfile canary.wav\n",
        "absolute.ffconcat": f"ffconcat version 1.0\nfile '{canary}'\n",
        "url.ffconcat": f"ffconcat version 1.0\nfile 'file:{canary}'\n",
        "relative.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.5,\ncanary.wav\n"
        "#EXT-X-ENDLIST\n",
        "absolute.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\nfile://{canary}\n#EXT-X-ENDLIST\n",
    }
    for name, body in playlists.items():
        (side / name).write_text(body, encoding="utf-8")
        cases.append(Case(side / name, reason="refers to other files"))
    return cases, canary


def chirp_like() -> np.ndarray:
    """A second of rising tone (its own content, so no case is a copy of another)."""
    t = np.arange(48000) / 48000
    return (0.4 * np.sin(2 * np.pi * (200 * t + 400 * t**2))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Case], Path, FileWatch]]:
    """The cases, the canary, and a watch on the canary (set up after checking the canary decodes)."""
    cases, canary = build_corpus(tmp_path_factory.mktemp("bad-inputs"))
    assert decode(canary.read_bytes(), Limits(10**8, 60, 30)).duration == pytest.approx(1.5, abs=0.01)
    watch = FileWatch(canary)
    yield cases, canary, watch
    watch.close()


def assert_canary_untouched(watch: FileWatch, canary: Path) -> None:
    """No process opened the canary; then prove the watch would have seen it."""
    assert watch.events() == 0, "something opened the canary file a playlist points at"
    canary.read_bytes()
    assert watch.events() > 0, "the inotify watch does not work, so it proves nothing"


def corpus_config(data_dir: Path, model_dir: Path) -> Config:
    return make_config(data_dir, model_dir, search={"vocabulary": "none"}, limits={"requests_per_minute": 0})


def ref_for(case: Case, filename: str | None = None) -> AudioRef:
    async def fetch() -> bytes:
        return case.path.read_bytes()

    return AudioRef(filename or case.filename or case.path.name, fetch, size=case.path.stat().st_size)


def no_pwned(*roots: Path) -> None:
    for root in (*roots, Path.cwd()):
        assert not list(root.rglob("PWNED*")), "a file name was run as a shell command"


async def test_every_bad_input_through_add(
    corpus: tuple[list[Case], Path, FileWatch], tmp_path: Path, tiny_model_dir: Path
) -> None:
    cases, canary, watch = corpus
    data = tmp_path / "data"
    added_ids: dict[str, int] = {}
    async with Engine.open(corpus_config(data, tiny_model_dir), warm_labels=False) as engine:
        jobs = [(case, ref_for(case), f"case{i}") for i, case in enumerate(cases)]
        click_case = next(c for c in cases if c.path.name == "click.wav")
        jobs.append((click_case, ref_for(click_case, HOSTILE_REF_NAME), "hostile"))
        unnamed = Case(encode(tone(0.3, 777), tmp_path / "unnamed.wav"), accept=(0.29, 0.31))  # content of its own
        jobs.append((unnamed, ref_for(unnamed, ".."), "dots"))
        for case, ref, word in jobs:
            space = f"s-{word}"  # one space each, so the same file may be added under several names
            request = Request("test", space, "u1", Command.ADD, text=f"{word} description", audio=(ref,))
            reply = await engine.handle(request)
            label = f"{ref.filename!r}: {reply.text!r}"
            assert reply.kind in (ReplyKind.ADDED, ReplyKind.ERROR), label
            assert reply.error_id is None, f"an internal error, not a clear rejection: {label}"
            if reply.kind == ReplyKind.ERROR:
                assert case.reason is not None, f"should have been accepted: {label}"
                assert case.reason in reply.text, label
                assert await engine.store.count(space) == 0, label
                continue
            assert case.accept is not None, f"should have been rejected ({case.reason}): {label}"
            added = reply.added
            assert added is not None and not added.duplicate, label
            low, high = case.accept
            assert low <= added.duration <= high, label
            row = await engine.store.get_sample(added.sample_id)
            assert row is not None and row.space == space
            stored = engine.files.path(row.sha256, row.ext)
            assert stored.read_bytes() == case.path.read_bytes(), label
            assert stored.parent.parent == data / "files" and stored.stem == row.sha256, label
            assert "/" not in row.name and "\\" not in row.name and not row.name.startswith(".."), row.name
            assert await searchable_problems(engine, space, {added.sample_id: word}) == [], label
            added_ids[word] = added.sample_id
        rows = await engine.store.get_samples(list(added_ids.values()))
        assert rows[added_ids["hostile"]].name == "hostile 'q' \"x\" 音.wav"
        assert (rows[added_ids["dots"]].name, rows[added_ids["dots"]].ext) == ("sound", ".bin")
        weird = next(i for i, c in enumerate(cases) if c.path.name == WEIRD_NAME)
        assert rows[added_ids[f"case{weird}"]].name == WEIRD_NAME
        assert await engine_problems(engine) == []
        still = await engine.handle(Request("test", "s-case0", "u1", Command.SEARCH, text="tone"))
        assert still.kind == ReplyKind.RESULTS  # the engine survived every case
    assert store_problems(data) == []
    no_pwned(data, canary.parent.parent)
    assert_canary_untouched(watch, canary)


@contextlib.contextmanager
def root_logging_restored() -> Iterator[None]:
    """`shira` sets up the root logger for its process; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_every_bad_input_through_shira_index(
    corpus: tuple[list[Case], Path, FileWatch],
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases, canary, watch = corpus
    data = tmp_path / "data"
    config = tmp_path / "shira.toml"
    model = json.dumps(str(tiny_model_dir))
    config.write_text(f'[model]\nid = {model}\nprecision = "fp32"\n[search]\nvocabulary = "none"\n', encoding="utf-8")
    corpus_dir = cases[0].path.parent
    playlists = [c.path for c in cases if c.path.parent != corpus_dir]
    argv = ["index", "--json", "--config", str(config), "--data-dir", str(data), corpus_dir, *playlists]
    with root_logging_restored():
        code = shira_main([str(a) for a in argv])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    outcome = {}
    for case in cases:
        name = case.path.name
        if name in failed:
            assert case.reason is not None and case.reason in failed[name], f"{name}: {failed[name]}"
            outcome[name] = "rejected"
        else:
            assert case.accept is not None, f"{name} should have been rejected ({case.reason})"
            outcome[name] = "accepted"
    assert report["duplicates"] == 0
    assert report["added"] == list(outcome.values()).count("accepted")
    assert len(report["failed"]) == list(outcome.values()).count("rejected")

    async def check() -> None:
        async with Engine.open(corpus_config(data, tiny_model_dir), warm_labels=False) as engine:
            assert await engine_problems(engine) == []
            ids, _ = await engine.store.vectors("console")
            rows = await engine.store.get_samples([int(i) for i in ids])
            by_name = {row.name: row for row in rows.values()}
            for case in cases:
                if outcome[case.path.name] == "accepted":
                    row = by_name[case.path.name]
                    assert case.accept is not None and case.accept[0] <= row.duration <= case.accept[1]
            assert sorted(by_name) == sorted(n for n, o in outcome.items() if o == "accepted")
            words = {case.path.name: case.search_word() for case in cases}
            assert await searchable_problems(engine, "console", {r.id: words[r.name] for r in rows.values()}) == []

    asyncio.run(check())
    assert store_problems(data) == []
    no_pwned(data, canary.parent.parent)
    assert_canary_untouched(watch, canary)


@pytest.mark.timeout(120)
async def test_special_files_named_to_shira_index_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    """/dev/zero or a named pipe given to `shira index` is refused at once, not read forever."""
    from bot.importer import import_paths

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    plain = encode(tone(0.5), tmp_path / "plain.wav")
    data = tmp_path / "data"
    async with Engine.open(corpus_config(data, tiny_model_dir), warm_labels=False) as engine:
        report = await import_paths(engine, [Path("/dev/zero"), fifo, plain], "s")
    failed = {Path(path).name: error for path, error in report.failed}
    assert set(failed) == {"zero", "pipe.wav"}, report.summary()
    assert all("not a regular file" in e for e in failed.values()), failed
    assert report.added == 1
    assert store_problems(data) == []
