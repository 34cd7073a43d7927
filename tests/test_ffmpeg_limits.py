"""Every ffmpeg child is limited: no secrets in its environment, rlimits, a timeout that kills and reaps it, memory
failures with a clear reason, atomic previews, and a streaming decoder that stays bounded and cleans up."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.audio import MB, SAMPLE_RATE, Limits, decode, decode_stream, export_preview, run_ffmpeg
from core.audio import ffmpeg_exe as audio_ffmpeg_exe
from core.errors import BadAudio, TooCostly, TooLarge, TooLong
from tests.support.sounds import chirp, encode, ffmpeg_exe, tone

LIMITS = Limits(max_bytes=400 * MB, max_seconds=700, timeout=60)
PCM_IN = ["-f", "s16le", "-ar", "48000", "-ac", "1", "-protocol_whitelist", "pipe", "-i", "pipe:0"]


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


def ffmpeg_children() -> dict[int, str]:
    """This process's ffmpeg children, pid -> state letter (Z for an unreaped zombie)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm, rest = line[line.index("(") + 1 : line.rindex(")")], line[line.rindex(")") + 2 :].split()
        if int(rest[1]) == os.getpid() and "ffmpeg" in comm:
            found[int(entry)] = rest[0]
    return found


def wait_for_child(seconds: float = 10.0) -> int:
    """The pid of the one ffmpeg child, once it runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        children = ffmpeg_children()
        if children:
            assert len(children) == 1, children
            return next(iter(children))
        time.sleep(0.01)
    raise AssertionError("no ffmpeg child appeared")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)


def long_flac(path: Path, seconds: int, freq: int = 440) -> Path:
    """A long sine tone as FLAC, synthesised by ffmpeg."""
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000:duration={seconds}", "-c:a", "flac", str(path)
    )
    return path


def flac_with_pictures(path: Path, count: int, size: int = 16_000_000) -> Path:
    """Five seconds of tone with `count` embedded pictures of `size` bytes each: ffmpeg holds them all in memory."""
    data = encode(tone(5.0), path.with_suffix(".plain.flac")).read_bytes()
    assert data[:4] == b"fLaC"
    blocks, pos, last = [], 4, False
    while not last:
        last, length = bool(data[pos] & 0x80), int.from_bytes(data[pos + 1 : pos + 4], "big")
        blocks.append((data[pos] & 0x7F, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    mime = b"image/png"
    picture = struct.pack(">II", 3, len(mime)) + mime + struct.pack(">IIIIII", 0, 1, 1, 24, 0, size) + bytes(size)
    blocks[1:1] = [(6, picture)] * count
    with path.open("wb") as fh:
        fh.write(b"fLaC")
        for i, (kind, body) in enumerate(blocks):
            fh.write(bytes([kind | (0x80 if i == len(blocks) - 1 else 0)]) + len(body).to_bytes(3, "big") + body)
        fh.write(data[pos:])
    return path


def peak_hz(samples: np.ndarray) -> float:
    window = samples[: SAMPLE_RATE // 2]
    return float(np.argmax(np.abs(np.fft.rfft(window))) * SAMPLE_RATE / len(window))


@pytest.fixture(autouse=True)
def no_ffmpeg_left() -> object:
    """Every test must leave no ffmpeg child behind, running or zombie."""
    audio_ffmpeg_exe()  # imageio-ffmpeg runs `ffmpeg -version` once to validate it: not a child to find
    assert ffmpeg_children() == {}
    yield
    assert ffmpeg_children() == {}


# The runner: environment, rlimits, timeout.


def test_ffmpeg_gets_a_minimal_environment_and_its_rlimits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRA_TELEGRAM_TOKEN", "123:SECRET")
    monkeypatch.setenv("HOME", "/home/secret-home")
    pcm = bytes(2 * SAMPLE_RATE * 2)  # two seconds, read in real time (-re): long enough to look at the child
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_ffmpeg, ["-re", *PCM_IN, "-f", "null", "-"], pcm, 30, 700 * MB, 7)
        pid = wait_for_child()
        time.sleep(0.2)  # past the exec: /proc/PID/environ and limits are ffmpeg's own
        environ, limits = environ_of(pid), Path(f"/proc/{pid}/limits").read_text()
        assert running.result().returncode == 0
    assert "SECRET" not in str(environ) and not any(name.startswith("SHIRA_") for name in environ), environ
    assert set(environ) <= {"LC_ALL", "MALLOC_ARENA_MAX", "PWD"}, environ
    assert environ["LC_ALL"] == "C"
    address = next(line for line in limits.splitlines() if line.startswith("Max address space")).split()
    cpu = next(line for line in limits.splitlines() if line.startswith("Max cpu time")).split()
    assert address[3:5] == [str(700 * MB)] * 2, address
    assert cpu[3:5] == ["7", "7"], cpu


def test_a_running_streaming_decoder_sees_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIRA_TELEGRAM_TOKEN", "123:SECRET")
    data = encode(tone(20.0), tmp_path / "t.wav").read_bytes()
    stream = decode_stream(data, LIMITS, chunk_seconds=1.0)
    first = next(stream)  # ffmpeg now waits for us to read on: it is alive
    pid = wait_for_child()
    assert b"SECRET" not in Path(f"/proc/{pid}/environ").read_bytes()
    assert b"SHIRA_" not in Path(f"/proc/{pid}/environ").read_bytes()
    stream.close()
    assert len(first) == SAMPLE_RATE
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.timeout(60)
def test_timeout_kills_and_reaps_ffmpeg() -> None:
    pcm = bytes(2 * SAMPLE_RATE * 30)  # thirty seconds at real time
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_ffmpeg, ["-re", *PCM_IN, "-f", "null", "-"], pcm, 1.0)
        pid = wait_for_child()
        with pytest.raises(TooCostly, match="took longer than 1 s"):
            running.result()
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{pid}").exists()  # neither running nor a zombie


@pytest.mark.timeout(60)
def test_decode_timeout_is_a_clear_error(tmp_path: Path) -> None:
    data = long_flac(tmp_path / "long.flac", 600).read_bytes()
    with pytest.raises(TooCostly, match="Decoding took longer than 0 s"):
        decode(data, Limits(LIMITS.max_bytes, LIMITS.max_seconds, timeout=0.05))
    assert decode(data, LIMITS).duration == pytest.approx(600, abs=0.05)  # the same file, given time


@pytest.mark.timeout(90)
def test_processor_time_limit_stops_ffmpeg() -> None:
    burn = ["-f", "lavfi", "-i", "anoisesrc=sample_rate=192000:duration=36000", "-f", "null", "-"]  # hours of work
    with pytest.raises(TooCostly, match=r"took too long \(over 1 s of processor time\)"):  # not the 60 s timeout
        run_ffmpeg(burn, timeout=60, cpu_seconds=1)


@pytest.mark.timeout(120)
def test_a_file_needing_more_memory_than_allowed_fails_clearly(tmp_path: Path) -> None:
    # ffmpeg needs ~250 MB of address space to start; this file makes it hold 16 x 16 MB of pictures on top.
    heavy = flac_with_pictures(tmp_path / "covers.flac", 16)
    small = encode(tone(1.0), tmp_path / "small.flac").read_bytes()
    tight = Limits(LIMITS.max_bytes, 60, 60, memory_bytes=380 * MB)
    assert decode(small, tight).duration == pytest.approx(1.0, abs=0.01)  # ffmpeg itself fits in the limit
    data = heavy.read_bytes()
    assert decode(data, Limits(LIMITS.max_bytes, 60, 60)).duration == pytest.approx(5.0, abs=0.01)  # 1 GB: fine
    with pytest.raises(TooCostly, match=r"Decoding needed more memory than allowed \(380 MB\)"):
        decode(data, tight)
    del data
    with pytest.raises(TooCostly, match="needed more memory than allowed"):
        list(decode_stream(heavy, tight))


# Previews.


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
def test_concurrent_previews_of_one_path_are_always_whole(tmp_path: Path, fmt: str) -> None:
    audio = decode(encode(chirp(4.0), tmp_path / "c.flac").read_bytes(), LIMITS)
    out_dir = tmp_path / "previews"
    path = out_dir / f"p.{fmt}"
    start, done = threading.Barrier(20), threading.Event()
    seen: dict[str, bytes] = {}
    empty_reads = 0

    def export() -> Path:
        start.wait()
        return export_preview(audio, path, fmt, max_bytes=200_000)

    def watch() -> None:  # whatever is at path, whenever it is there, must be a whole preview
        nonlocal empty_reads
        while not done.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            if not data:
                empty_reads += 1
            seen.setdefault(hashlib.sha256(data).hexdigest(), data)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: export(), range(20)))
    finally:
        done.set()
        watcher.join()
    assert results == [path] * 20
    assert sorted(p.name for p in out_dir.iterdir()) == [path.name]  # no .part left behind
    assert empty_reads == 0
    seen.setdefault("final", path.read_bytes())
    for data in seen.values():
        assert 0 < len(data) <= 200_000
        assert decode(data, LIMITS).duration == pytest.approx(4.0, abs=0.1)


def test_a_failing_preview_leaves_nothing(tmp_path: Path) -> None:
    audio = decode(encode(chirp(4.0), tmp_path / "c.flac").read_bytes(), LIMITS)
    out_dir = tmp_path / "previews"
    out_dir.mkdir()
    with pytest.raises(TooLarge):
        export_preview(audio, out_dir / "p.ogg", "ogg", max_bytes=100)
    blocked = out_dir / "taken.ogg"
    blocked.mkdir()  # the rename onto it fails after the temporary file was written
    with pytest.raises(OSError):
        export_preview(audio, blocked, "ogg", max_bytes=200_000)
    assert [p.name for p in out_dir.iterdir()] == ["taken.ogg"]
    assert list(blocked.iterdir()) == []


# The streaming decoder.


@pytest.mark.timeout(120)
def test_ten_minutes_stream_in_bounded_chunks(tmp_path: Path) -> None:
    path = long_flac(tmp_path / "ten.flac", 600)
    tracemalloc.start()
    try:
        lengths = []
        for chunk in decode_stream(path, LIMITS, chunk_seconds=30.0):
            assert chunk.dtype == np.float32 and chunk.ndim == 1
            lengths.append(len(chunk))
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert max(lengths) == 30 * SAMPLE_RATE and len(lengths) == 20
    assert sum(lengths) / SAMPLE_RATE == pytest.approx(600, abs=0.05)
    assert peak < 3 * 30 * SAMPLE_RATE * 4, f"{peak / MB:.0f} MB traced: the stream is not bounded by its chunks"


@pytest.mark.timeout(60)
def test_stream_stops_at_the_duration_limit(tmp_path: Path) -> None:
    data = long_flac(tmp_path / "ten.flac", 600).read_bytes()
    got = []
    with pytest.raises(TooLong, match="100 s limit"):
        for chunk in decode_stream(data, Limits(LIMITS.max_bytes, 100, 60), chunk_seconds=30.0):
            got.append(len(chunk))
    assert sum(got) <= 100 * SAMPLE_RATE


def make_video(path: Path, video: list[str], audio: list[str], size: str = "160x120") -> Path:
    """Three seconds of test picture with a 1 kHz tone."""
    sources = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=15:duration=3"]
    sources += ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=3"]
    ffmpeg(*sources, *video, *audio, "-shortest", str(path))
    return path


VIDEOS = {
    "note.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], ["-c:a", "aac"], "240x240"),  # a Telegram video note
    "clip.mov": (["-c:v", "mpeg4"], ["-c:a", "aac"], "160x120"),
    "clip.webm": (["-c:v", "libvpx"], ["-c:a", "libopus"], "160x120"),
    "clip.mkv": (["-c:v", "mpeg4"], ["-c:a", "flac"], "160x120"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_videos_give_their_audio_track(tmp_path: Path, name: str) -> None:
    video, audio, size = VIDEOS[name]
    path = make_video(tmp_path / name, video, audio, size)
    for source in (path, path.read_bytes()):
        samples = np.concatenate(list(decode_stream(source, LIMITS, chunk_seconds=1.0)))
        assert len(samples) / SAMPLE_RATE == pytest.approx(3.0, abs=0.05)
        assert abs(peak_hz(samples[SAMPLE_RATE:]) - 1000) < 10
    assert decode(path.read_bytes(), LIMITS).duration == pytest.approx(3.0, abs=0.05)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["long.m4a", "long.wav"])
def test_closing_a_stream_early_kills_ffmpeg_and_removes_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    fmt = {"long.m4a": "m4a", "long.wav": "wav"}[name]
    data = encode(tone(60.0), tmp_path / name, fmt=fmt).read_bytes()
    stream = decode_stream(data, LIMITS, chunk_seconds=1.0)
    assert len(next(stream)) == SAMPLE_RATE
    pid = wait_for_child()
    assert ffmpeg_children() == {pid: ffmpeg_children()[pid]} and ffmpeg_children()[pid] != "Z"
    if fmt == "m4a":
        assert len(list(scratch.iterdir())) == 1  # MP4 bytes are decoded from a private temporary file
    stream.close()
    assert not Path(f"/proc/{pid}").exists()
    assert list(scratch.iterdir()) == []


def test_stream_checks_its_source_before_starting(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(BadAudio, match="not a regular file"):
        decode_stream(fifo, LIMITS)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(BadAudio, match="empty"):
        decode_stream(empty, LIMITS)
    with pytest.raises(TooLarge):
        decode_stream(b"\0" * (MB + 1), Limits(MB, 60, 30))
    with pytest.raises(BadAudio, match="not in an audio format"):
        list(decode_stream(b"just some text, certainly not audio\n" * 10, LIMITS))


def test_playlists_given_as_paths_open_nothing(tmp_path: Path) -> None:
    """A path is opened with the file protocol allowed, so only the demuxer whitelist stops a playlist."""
    canary = encode(tone(2.0, 1000), tmp_path / "canary.wav")
    playlists = {
        "p.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{canary}\n#EXT-X-ENDLIST\n",
        "p.ffconcat": f"ffconcat version 1.0\nfile '{canary}'\n",
    }
    for name, body in playlists.items():
        path = tmp_path / name
        path.write_text(body, encoding="utf-8")
        with pytest.raises(BadAudio, match="refers to other files"):
            list(decode_stream(path, LIMITS))
