"""Synthesise test sounds and encode them with the bundled ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

SR = 48000

CODECS = {
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "ogg": ["-c:a", "libopus", "-b:a", "48k"],
    "opus": ["-c:a", "libopus", "-b:a", "48k"],
    "m4a": ["-c:a", "aac", "-b:a", "96k"],
}


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(seconds * sr), dtype=np.float64) / sr


def tone(seconds: float = 2.0, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    """A sine tone."""
    return (0.5 * np.sin(2 * np.pi * freq * _t(seconds, sr))).astype(np.float32)


def noise(seconds: float = 2.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """White noise."""
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32).clip(-1, 1)


def chirp(seconds: float = 2.0, f0: float = 100.0, f1: float = 8000.0, sr: int = SR) -> np.ndarray:
    """A linear frequency sweep."""
    t = _t(seconds, sr)
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def click(seconds: float = 0.01, sr: int = SR) -> np.ndarray:
    """A short click: one impulse then silence."""
    out = np.zeros(max(1, int(seconds * sr)), dtype=np.float32)
    out[0] = 0.9
    return out


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode(samples: np.ndarray, path: Path, fmt: str | None = None, sr: int = SR) -> Path:
    """Encode mono float samples to path with the given format (default: from the suffix)."""
    fmt = fmt or path.suffix.lstrip(".")
    muxer = {"ogg": "ogg", "opus": "ogg", "m4a": "mp4"}.get(fmt, fmt)
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(sr),
        "-ac",
        "1",
        "-i",
        "pipe:0",
    ]
    cmd += CODECS[fmt] + ["-f", muxer, str(path)]
    subprocess.run(cmd, input=np.asarray(samples, dtype=np.float32).tobytes(), check=True, capture_output=True)
    return path


def video(samples: np.ndarray, path: Path, sr: int = SR) -> Path:
    """A small video (a colour test pattern) with these mono samples as its audio track: MP4 (H.264, AAC) or WebM
    (VP8, Opus), by the path's suffix."""
    codecs = {
        ".mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "64k"],
        ".webm": ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus", "-b:a", "48k"],
    }[path.suffix]
    seconds = len(samples) / sr
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={seconds:.3f}"]
    cmd += ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0", *codecs, "-shortest", str(path)]
    subprocess.run(cmd, input=np.asarray(samples, dtype=np.float32).tobytes(), check=True, capture_output=True)
    return path
