"""Decoding: formats, limits, typed errors, protection against references, previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.audio import MB, SAMPLE_RATE, Limits, check_declared, decode, export_preview
from core.errors import BadAudio, TooLarge, TooLong
from tests.support.sounds import chirp, encode, tone

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
