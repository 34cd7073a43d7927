"""Decoding: formats, limits, typed errors, protection against references, previews."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from core.audio import MB, SAMPLE_RATE, Limits, check_declared, decode, decode_excerpt, export_preview
from core.errors import BadAudio, TooCostly, TooLarge, TooLong
from tests.support.sounds import chirp, encode, ffmpeg_exe, tone

LIMITS = Limits(max_bytes=10 * MB, max_seconds=60, timeout=30)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "opus", "m4a"])
def test_decodes_every_format_to_48k_mono(tmp_path: Path, fmt: str) -> None:
    path = encode(tone(1.5, 440), tmp_path / f"a.{fmt}")
    audio = decode(path.read_bytes(), LIMITS)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert abs(audio.duration - 1.5) < 0.06
    # The dominant frequency survives decoding: the tone is really there.
    spectrum = np.abs(np.fft.rfft(audio.samples[: SAMPLE_RATE // 2]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (SAMPLE_RATE // 2)
    assert abs(peak_hz - 440) < 10


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_an_excerpt_of_a_stored_file_is_the_same_samples_as_decoding_it_whole(tmp_path: Path, fmt: str) -> None:
    path = encode(chirp(4.0, 100, 3000), tmp_path / f"c.{fmt}")
    whole = decode(path.read_bytes(), LIMITS, 8000).samples
    part = decode_excerpt(path, 1.25, 0.5, LIMITS, 8000).samples
    assert len(part) == 4000
    at = 10000  # 1.25 s at 8 kHz
    lags = [float(np.dot(part, whole[at + lag : at + lag + 4000])) for lag in range(-16, 17)]
    assert int(np.argmax(lags)) - 16 == 0  # seeking lands on the sample
    assert np.max(np.abs(part - whole[at : at + 4000])[64:]) < 0.05  # past the resampler's start-up
    assert len(decode_excerpt(path, 3.8, 5.0, LIMITS, 8000).samples) == pytest.approx(1600, abs=200)  # to the end
    with pytest.raises(BadAudio, match="Can't read"):
        decode_excerpt(tmp_path / "gone.wav", 0.0, 1.0, LIMITS)


def test_decoding_is_deterministic(tmp_path: Path) -> None:
    data = encode(chirp(3.0), tmp_path / "c.ogg").read_bytes()
    assert np.array_equal(decode(data, LIMITS).samples, decode(data, LIMITS).samples)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"just some text, certainly not audio\n" * 10, "not in an audio format"),
        (bytes(range(256)) * 40, "not in an audio format"),
    ],
)
def test_bad_bytes_raise_bad_audio_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadAudio, match=reason):
        decode(data, LIMITS)


def test_too_large_is_rejected_before_decoding() -> None:
    with pytest.raises(TooLarge, match="limit is 1 MB"):
        decode(b"\0" * (MB + 1), Limits(MB, 60, 30))


def test_too_long_is_rejected(tmp_path: Path) -> None:
    data = encode(tone(4.0), tmp_path / "long.flac").read_bytes()
    with pytest.raises(TooLong, match="3 s limit"):
        decode(data, Limits(10 * MB, 3, 30))


def test_declared_size_and_duration_are_checked() -> None:
    check_declared(100, 1.0, LIMITS)
    with pytest.raises(TooLarge):
        check_declared(11 * MB, None, LIMITS)
    with pytest.raises(TooLong):
        check_declared(None, 61.0, LIMITS)


def test_limits_default_to_a_gigabyte_and_the_timeout() -> None:
    assert (LIMITS.memory_bytes, LIMITS.cpu_seconds) == (1024 * MB, None)
    assert issubclass(TooCostly, BadAudio)  # callers that catch BadAudio still catch running out of time or memory


@pytest.mark.parametrize(
    ("name", "codec", "reason"),
    [
        ("a.mkv", "tta", "it uses an audio codec I can't decode"),  # the decoder is not on the whitelist
        ("a.flv", "mp3", "it is not in an audio format I recognise"),  # the demuxer is not on the whitelist
    ],
)
def test_formats_outside_the_whitelists_are_refused(tmp_path: Path, name: str, codec: str, reason: str) -> None:
    path = tmp_path / name
    lavfi = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", *lavfi, "-c:a", codec, str(path)], check=True)
    with pytest.raises(BadAudio, match=reason):
        decode(path.read_bytes(), LIMITS)


def test_mp4_bytes_leave_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(tone(1.0), tmp_path / "a.m4a").read_bytes()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert decode(data, LIMITS).duration == pytest.approx(1.0, abs=0.05)
    with pytest.raises(BadAudio):
        decode(data[: len(data) // 2], LIMITS)  # MP4 without its end: fails, and still cleans up
    assert list(scratch.iterdir()) == []


def test_playlists_cannot_read_local_files(tmp_path: Path) -> None:
    canary = encode(tone(2.0, 1000), tmp_path / "canary.wav")
    concat = f"ffconcat version 1.0\nfile '{canary}'\n".encode()
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{canary}\n#EXT-X-ENDLIST\n".encode()
    for playlist in (concat, hls):
        # The canary is valid audio: had ffmpeg opened it, decoding would have succeeded.
        with pytest.raises(BadAudio):
            decode(playlist, LIMITS)


def test_preview_fits_the_size_limit(tmp_path: Path) -> None:
    audio = decode(encode(chirp(20.0), tmp_path / "c.flac").read_bytes(), LIMITS)
    for fmt in ("ogg", "mp3"):
        out = export_preview(audio, tmp_path / f"p.{fmt}", fmt, max_bytes=60_000)
        assert 0 < out.stat().st_size <= 60_000
        back = decode(out.read_bytes(), LIMITS)
        assert back.duration > 5  # trimmed or squeezed, but still a real preview
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.flac", "p.mp3", "p.ogg"]  # no temporary file left
