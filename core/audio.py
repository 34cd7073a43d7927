"""Decode anything ffmpeg reads to 48 kHz mono float32, safely, and export previews."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BadAudio, TooLarge, TooLong

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
MB = 1024 * 1024

# ffmpeg stderr fragments mapped to the reason we give the user.
_REFERS = "it refers to other files (playlists and references are not accepted)"
_REASONS = (
    ("no decoder found", "it uses an audio codec I can't decode"),
    ("not on whitelist", _REFERS),
    ("Unsafe file name", _REFERS),  # an ffconcat playlist naming an absolute path or a URL
    ("Impossible to open", _REFERS),  # an ffconcat playlist naming a relative path
    ("Not detecting m3u8/hls", _REFERS),  # an HLS playlist
    ("matches no streams", "it has no audio track"),
    ("does not contain any stream", "it has no audio track"),
    ("Output file #0 does not contain any stream", "it has no audio track"),
    ("Invalid data found", "it is not in an audio format I recognise"),
    ("moov atom not found", "the file is incomplete or damaged"),
    ("End of file", "the file is incomplete or damaged"),
    ("Invalid argument", "it is not in an audio format I recognise"),
)


@dataclass(frozen=True)
class Limits:
    """What one decode may cost."""

    max_bytes: int
    max_seconds: float
    timeout: float


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio at SAMPLE_RATE."""

    samples: np.ndarray

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SAMPLE_RATE


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def sha256(data: bytes) -> str:
    """Hex sha256 of a file's bytes: the content address."""
    return hashlib.sha256(data).hexdigest()


def check_declared(size: int | None, duration: float | None, limits: Limits) -> None:
    """Reject a file by its declared size or duration before downloading it."""
    if size is not None and size > limits.max_bytes:
        raise TooLarge(f"That file is {size / MB:.1f} MB; the limit is {limits.max_bytes / MB:.0f} MB.")
    if duration is not None and duration > limits.max_seconds:
        raise TooLong(f"That sound lasts {duration:.0f} s; the limit is {limits.max_seconds:.0f} s.")


def read_limited(path: Path, limits: Limits) -> bytes:
    """Read a regular file whole after checking its size against the limit, and never read past the limit
    (a device such as /dev/zero or a pipe would otherwise be read forever)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BadAudio(f"Can't read {path.name}: it is not a regular file.")
        check_declared(info.st_size, None, limits)
        with path.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise BadAudio(f"Can't read {path.name}: {exc.strerror or exc}.") from exc
    check_declared(len(data), None, limits)  # it grew while we looked
    return data


def _is_iso_bmff(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def _reason(stderr: str) -> str:
    for fragment, reason in _REASONS:
        if fragment in stderr:
            return reason
    return "it is not in an audio format I recognise"


def decode(data: bytes, limits: Limits) -> Audio:
    """Decode bytes to 48 kHz mono float32, enforcing size, duration and time limits."""
    check_declared(len(data), None, limits)
    if not data:
        raise BadAudio("That file is empty.")
    max_samples = int(limits.max_seconds * SAMPLE_RATE)
    out_args = ["-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE)]
    out_args += ["-t", f"{limits.max_seconds + 1:.3f}", "-f", "f32le", "pipe:1"]
    base = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-threads", "1"]
    tmp: str | None = None
    try:
        if _is_iso_bmff(data):
            # MP4/M4A may keep its index at the end, which a pipe can't seek to. The mov demuxer
            # ignores external data references by default, so a temporary file is safe here.
            fd, tmp = tempfile.mkstemp(prefix="shira-", suffix=".mp4")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            cmd = base + ["-protocol_whitelist", "file", "-f", "mov", "-i", tmp] + out_args
            stdin: bytes | None = None
        else:
            # Input only through a pipe, and no other protocol, so a playlist can't open local files.
            cmd = base + ["-protocol_whitelist", "pipe", "-i", "pipe:0"] + out_args
            stdin = data
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=limits.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BadAudio(f"Decoding took longer than {limits.timeout:.0f} s, so I gave up.") from exc
    finally:
        if tmp:
            os.unlink(tmp)
    stderr = proc.stderr.decode("utf-8", "replace")
    returncode, raw = proc.returncode, proc.stdout
    del proc  # from here on, the raw output and at most one cleaned copy are alive (a long sound is ~115 MB)
    count = len(raw) // 4
    if returncode != 0 and count == 0:
        log.debug("ffmpeg failed (%s): %s", returncode, stderr.strip()[-500:])
        raise BadAudio(f"I couldn't decode that file: {_reason(stderr)}.")
    if count == 0:
        raise BadAudio("That file contains no audio.")
    if count > max_samples:
        raise TooLong(f"That sound is longer than the {limits.max_seconds:.0f} s limit.")
    if returncode != 0:
        log.info("ffmpeg reported errors but produced audio; keeping %.2f s", count / SAMPLE_RATE)
    samples = np.frombuffer(raw, dtype=np.float32, count=count).copy()
    del raw
    np.clip(samples, -1.0, 1.0, out=samples)  # in place; infinities become +-1
    samples[np.isnan(samples)] = 0.0
    return Audio(samples)


def _pydub():
    """Import pydub quietly and point it at the bundled ffmpeg."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydub warns about a missing system ffmpeg and audioop at import
        from pydub import AudioSegment
    AudioSegment.converter = ffmpeg_exe()
    return AudioSegment


PREVIEW_FORMATS = {
    "ogg": {"format": "ogg", "codec": "libopus", "bitrate": 64, "min_bitrate": 16},
    "mp3": {"format": "mp3", "codec": "libmp3lame", "bitrate": 128, "min_bitrate": 32},
}


def export_preview(audio: Audio, path: Path, fmt: str, max_bytes: int, max_seconds: float = 600.0) -> Path:
    """Write an OGG/Opus or MP3 preview that fits max_bytes, trimming if it must."""
    spec = PREVIEW_FORMATS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown preview format {fmt!r}")
    segment_cls = _pydub()
    pcm = (audio.samples * 32767).astype("<i2").tobytes()
    segment = segment_cls(data=pcm, sample_width=2, frame_rate=SAMPLE_RATE, channels=1)
    seconds = min(audio.duration, max_seconds)
    bitrate = min(spec["bitrate"], int(max_bytes * 8 * 0.85 / max(seconds, 0.1) / 1000))
    if fmt == "mp3":
        segment = segment.set_frame_rate(44_100)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    for _ in range(6):  # encoders overshoot their target on hard material: shrink and retry
        if bitrate < spec["min_bitrate"]:
            seconds *= bitrate / spec["min_bitrate"]
            bitrate = spec["min_bitrate"]
        part = segment[: max(1, int(seconds * 1000))]
        part.export(str(tmp), format=spec["format"], codec=spec["codec"], bitrate=f"{bitrate}k").close()
        size = tmp.stat().st_size
        if size <= max_bytes:
            break
        bitrate = int(bitrate * max_bytes / size * 0.9)
    else:
        tmp.unlink()
        raise TooLarge(f"I couldn't make a preview smaller than {max_bytes / MB:.1f} MB.")
    os.replace(tmp, path)
    return path
