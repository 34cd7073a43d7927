"""Decode anything ffmpeg reads to 48 kHz mono float32, safely, and export previews.

Every ffmpeg child goes through run_ffmpeg() or _FFmpeg: a minimal environment, address-space and processor-time
rlimits, its own session (so a kill reaches it), a time budget, and a demuxer, decoder and protocol whitelist.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypedDict

import numpy as np

from core.errors import BadAudio, TooCostly, TooLarge, TooLong

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
MB = 1024 * 1024

# Demuxers ffmpeg may use on a user's file: audio formats, and video containers (MP4/MOV/M4A/3GP, Matroska/WebM, AVI,
# MPEG-TS/PS). Playlists (hls, concat), image sequences and devices are not on it, so a file can't be probed into them.
_FORMATS = "wav,w64,flac,mp3,ogg,aiff,caf,au,aac,ac3,eac3,wv,ape,amr,asf,mov,matroska,avi,mpegts,mpeg"
# Audio decoders only: a video stream is never decoded (we map audio only), so video decoders are not needed.
_DECODERS = ",".join(
    """
    pcm_alaw pcm_mulaw pcm_f16le pcm_f24le pcm_f32be pcm_f32le pcm_f64be pcm_f64le pcm_s8 pcm_s16be pcm_s16le
    pcm_s24be pcm_s24le pcm_s32be pcm_s32le pcm_s64be pcm_s64le pcm_u8 pcm_u16be pcm_u16le pcm_u24be pcm_u24le
    pcm_u32be pcm_u32le adpcm_ms adpcm_ima_wav adpcm_ima_qt flac alac wavpack ape mp1 mp1float mp2 mp2float mp3
    mp3float aac aac_fixed opus libopus vorbis libvorbis ac3 ac3_fixed eac3 amrnb amrwb libopencore_amrnb
    libopencore_amrwb wmav1 wmav2 wmapro wmalossless
    """.split()
)
# The child's whole environment. MALLOC_ARENA_MAX=1 stops glibc reserving 64 MB of address space per thread, which
# otherwise makes RLIMIT_AS failures depend on the thread count rather than on what the file needs.
_ENV = {"LC_ALL": "C", "MALLOC_ARENA_MAX": "1"}
# Sets the rlimits in the child itself, before ffmpeg starts, then becomes ffmpeg (same pid). A shell rather than
# preexec_fn (not safe with threads, and it disables vfork) or prlimit() after spawning (ffmpeg would already be
# running, unlimited, for a moment). One value sets both soft and hard limits: at the CPU limit the kernel sends
# SIGKILL, which ffmpeg can't catch (it catches SIGXCPU and exits as if it had finished).
_WITH_LIMITS = 'ulimit -v "$1" && ulimit -t "$2" || exit 125; shift 2; exec "$@"'
_LIMITS_FAILED = 125
_BASE_ARGS = ["-hide_banner", "-nostats", "-nostdin", "-loglevel", "error"]
_OUT_OF_MEMORY = ("Cannot allocate memory", "pthread_create() failed", "out of memory", "Out of memory")
_STDERR_TAIL = 64 * 1024

# ffmpeg stderr fragments mapped to the reason we give the user.
_REFERS = "it refers to other files (playlists and references are not accepted)"
_UNKNOWN = "it is not in an audio format I recognise"
_REASONS = (
    ("no decoder found", "it uses an audio codec I can't decode"),
    ("Error while opening decoder", "it uses an audio codec I can't decode"),  # not on the decoder whitelist
    ("Protocol '", _REFERS),  # "Protocol 'file' not on whitelist"
    ("Not detecting m3u8/hls", _REFERS),  # an HLS playlist through a pipe (a file is "Format not on whitelist")
    ("matches no streams", "it has no audio track"),
    ("does not contain any stream", "it has no audio track"),
    ("Output file #0 does not contain any stream", "it has no audio track"),
    ("Invalid data found", _UNKNOWN),
    ("moov atom not found", "the file is incomplete or damaged"),
    ("End of file", "the file is incomplete or damaged"),
    ("Invalid argument", _UNKNOWN),
)
_PLAYLISTS = (b"#EXTM3U", b"ffconcat")  # what the hls and concat demuxers probe for


@dataclass(frozen=True)
class Limits:
    """What one decode may cost."""

    max_bytes: int
    max_seconds: float
    timeout: float
    memory_bytes: int = 1024 * MB  # ffmpeg's address space (RLIMIT_AS); it needs about 250 MB to start
    cpu_seconds: float | None = None  # ffmpeg's processor time (RLIMIT_CPU); None: the timeout plus a second


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio, at SAMPLE_RATE unless decoded for something that needs less (fingerprints)."""

    samples: np.ndarray
    rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate


@dataclass(frozen=True)
class FFmpegResult:
    """How an ffmpeg run ended: its exit code, all of its output and the tail of its messages."""

    returncode: int
    stdout: bytearray
    stderr: str


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _ffmpeg_path() -> str:
    """ffmpeg_exe() as an absolute path: the child's environment has no PATH to search."""
    exe = ffmpeg_exe()
    return shutil.which(exe) or exe


def sha256(data: bytes) -> str:
    """Hex sha256 of a file's bytes: the content address."""
    return hashlib.sha256(data).hexdigest()


def check_declared(size: int | None, duration: float | None, limits: Limits) -> None:
    """Reject a file by its declared size or duration before downloading it."""
    if size is not None and size > limits.max_bytes:
        raise TooLarge(f"That file is {size / MB:.1f} MB; the limit is {limits.max_bytes / MB:.0f} MB.")
    if duration is not None and duration > limits.max_seconds:
        raise TooLong(f"That sound lasts {duration:.0f} s; the limit is {limits.max_seconds:.0f} s.")


class _FFmpeg:
    """One running ffmpeg with its limits applied; close() always kills and reaps it."""

    def __init__(
        self,
        args: Sequence[str],
        stdin: bytes | None,
        timeout: float,
        memory_bytes: int,
        cpu_seconds: float | None,
        task: str,
    ) -> None:
        self.timeout, self.memory_bytes, self.task = timeout, memory_bytes, task
        self.cpu_seconds = math.ceil(timeout) + 1 if cpu_seconds is None else max(1, math.ceil(cpu_seconds))
        self.budget = timeout  # seconds left to wait for ffmpeg
        self.killed = False
        self._stderr = bytearray()
        self._threads = [threading.Thread(target=self._drain_stderr, name="ffmpeg-stderr", daemon=True)]
        if stdin is not None:
            self._threads.append(threading.Thread(target=self._feed, args=(stdin,), name="ffmpeg-stdin", daemon=True))
        limits = [str(max(1, memory_bytes // 1024)), str(self.cpu_seconds)]
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", _WITH_LIMITS, "sh", *limits, _ffmpeg_path(), *_BASE_ARGS, *args],
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=dict(_ENV),
            cwd="/",
            start_new_session=True,  # its own process group, so the kill on timeout reaches all of it
        )
        try:
            self._poll = select.poll()  # not select(): the process may have more than 1024 descriptors open
            self._poll.register(self.proc.stdout.fileno(), select.POLLIN)  # type: ignore[union-attr]
            for thread in self._threads:
                thread.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _FFmpeg:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def stderr(self) -> str:
        """The tail of ffmpeg's messages (complete once it has exited and been reaped)."""
        return self._stderr.decode("utf-8", "replace")

    def _feed(self, data: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        view = memoryview(data)
        try:
            while view:
                view = view[stdin.write(view) or 0 :]
        except OSError:
            pass  # ffmpeg stopped reading: it failed, finished early (-t), or was killed
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _drain_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        while chunk := stderr.read(65536):
            self._stderr += chunk
            del self._stderr[:-_STDERR_TAIL]

    def _kill(self) -> None:
        """SIGKILL ffmpeg's process group; only called before it is reaped, so its pid can't have been reused."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _too_slow(self) -> TooCostly:
        self._kill()
        log.info("ffmpeg ran past its %.1f s budget; killed it", self.timeout)
        return TooCostly(f"{self.task} took longer than {self.timeout:.0f} s, so I gave up.")

    def _wait_readable(self) -> None:
        started = time.monotonic()
        ready = self._poll.poll(math.ceil(max(0.0, self.budget) * 1000))
        self.budget -= time.monotonic() - started
        if not ready or self.budget <= 0:
            raise self._too_slow()

    def read(self, size: int) -> bytes:
        """Up to size bytes of ffmpeg's output, b"" at its end; raises TooCostly when the time budget runs out."""
        self._wait_readable()
        return os.read(self.proc.stdout.fileno(), size)  # type: ignore[union-attr]

    def read_into(self, view: memoryview) -> int:
        """Read ffmpeg's output into view; 0 at its end. Raises TooCostly when the time budget runs out."""
        self._wait_readable()
        return self.proc.stdout.readinto(view) or 0  # type: ignore[union-attr]

    def finish(self) -> int:
        """Wait for ffmpeg to exit after its output ended; raise TooCostly if it ran out of time, CPU or memory."""
        try:
            returncode = self.proc.wait(timeout=max(0.0, self.budget))
        except subprocess.TimeoutExpired:
            raise self._too_slow() from None
        for thread in self._threads:
            thread.join()
        if returncode == _LIMITS_FAILED and "ulimit" in self.stderr:
            raise RuntimeError(f"could not set ffmpeg's limits: {self.stderr.strip()}")
        if returncode in (-signal.SIGKILL, -signal.SIGXCPU) and not self.killed:
            log.info("ffmpeg hit its %d s processor time limit", self.cpu_seconds)
            raise TooCostly(f"{self.task} took too long (over {self.cpu_seconds} s of processor time), so I gave up.")
        if returncode != 0 and any(sign in self.stderr for sign in _OUT_OF_MEMORY):
            log.info("ffmpeg ran out of memory (limit %d MB): %s", self.memory_bytes // MB, self.stderr[-300:])
            raise TooCostly(f"{self.task} needed more memory than allowed ({self.memory_bytes / MB:.0f} MB).")
        if returncode < 0:
            log.warning("ffmpeg died from signal %d (memory limit %d MB)", -returncode, self.memory_bytes // MB)
        return returncode

    def close(self) -> None:
        """Kill ffmpeg if it still runs, reap it, and let the helper threads end."""
        if self.proc.poll() is None:
            self._kill()
        self.proc.wait()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def run_ffmpeg(
    args: Sequence[str],
    stdin: bytes | None = None,
    timeout: float = 60.0,
    memory_bytes: int = 1024 * MB,
    cpu_seconds: float | None = None,
    task: str = "Decoding",
) -> FFmpegResult:
    """Run ffmpeg with args (after the common ones) to completion, feeding stdin and collecting its output, within
    the time, processor-time and memory limits; raises TooCostly, naming the task, when one is exceeded."""
    with _FFmpeg(args, stdin, timeout, memory_bytes, cpu_seconds, task) as child:
        out = bytearray()
        while chunk := child.read(1 << 20):
            out += chunk
        returncode = child.finish()
        return FFmpegResult(returncode, out, child.stderr)


def _is_iso_bmff(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def _failure_reason(returncode: int, stderr: str, head: bytes) -> str:
    """Why ffmpeg could not decode a file, in words for the user."""
    if returncode < 0:
        return "the decoder crashed on it"
    if "Format not on whitelist" in stderr:
        return _REFERS if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_PLAYLISTS) else _UNKNOWN
    for fragment, reason in _REASONS:
        if fragment in stderr:
            return reason
    return _UNKNOWN


@contextlib.contextmanager
def _ffmpeg_input(source: bytes | Path) -> Iterator[tuple[list[str], bytes | None]]:
    """ffmpeg's input arguments and stdin for a checked source; MP4 bytes go through a private temporary file."""
    allowed = ["-threads", "1", "-format_whitelist", _FORMATS, "-codec_whitelist", _DECODERS]
    if isinstance(source, Path):
        yield [*allowed, "-protocol_whitelist", "file", "-i", f"file:{source.resolve()}"], None
    elif _is_iso_bmff(source):
        # MP4/M4A may keep its index at the end, which a pipe can't seek to. The mov demuxer ignores external
        # data references by default, so a file of our own, in a directory only we can read, is safe here.
        tmp = tempfile.mkdtemp(prefix="shira-ffmpeg-")
        try:
            path = os.path.join(tmp, "input.mp4")
            with open(path, "xb") as fh:
                fh.write(source)
            yield [*allowed, "-protocol_whitelist", "file", "-f", "mov", "-i", f"file:{path}"], None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        # Input only through a pipe, and no other protocol, so nothing can make ffmpeg open local files.
        yield [*allowed, "-protocol_whitelist", "pipe", "-i", "pipe:0"], source


def _output_args(limits: Limits, rate: int = SAMPLE_RATE, seconds: float | None = None) -> list[str]:
    """The first audio track as mono float32 at rate on stdout: seconds of it, else a second past the limit."""
    out = ["-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(rate)]
    length = limits.max_seconds + 1 if seconds is None else min(seconds, limits.max_seconds)
    return out + ["-t", f"{length:.6f}", "-f", "f32le", "pipe:1"]


def _clean(samples: np.ndarray) -> None:
    """Clip to [-1, 1] in place; infinities become +-1 and NaNs 0."""
    np.clip(samples, -1.0, 1.0, out=samples)
    samples[np.isnan(samples)] = 0.0


def decode(data: bytes, limits: Limits, rate: int = SAMPLE_RATE) -> Audio:
    """Decode bytes to mono float32 (48 kHz unless asked), enforcing size, duration, time and memory limits."""
    check_declared(len(data), None, limits)
    if not data:
        raise BadAudio("That file is empty.")
    max_samples = int(limits.max_seconds * rate)
    with _ffmpeg_input(data) as (in_args, stdin):
        result = run_ffmpeg(
            in_args + _output_args(limits, rate), stdin, limits.timeout, limits.memory_bytes, limits.cpu_seconds
        )
    returncode, stderr, raw = result.returncode, result.stderr, result.stdout
    del result  # from here on only the raw output is alive (a long sound is ~115 MB), viewed, not copied
    count = len(raw) // 4
    if returncode != 0 and count == 0:
        log.debug("ffmpeg failed (%s): %s", returncode, stderr.strip()[-500:])
        raise BadAudio(f"I couldn't decode that file: {_failure_reason(returncode, stderr, data[:64])}.")
    if count == 0:
        raise BadAudio("That file contains no audio.")
    if count > max_samples:
        raise TooLong(f"That sound is longer than the {limits.max_seconds:.0f} s limit.")
    if returncode != 0:
        log.info("ffmpeg reported errors but produced audio; keeping %.2f s", count / rate)
    samples = np.frombuffer(raw, dtype=np.float32, count=count)  # writable, since raw is a bytearray
    _clean(samples)
    return Audio(samples, rate)


def decode_excerpt(path: Path, start: float, seconds: float, limits: Limits, rate: int = SAMPLE_RATE) -> Audio:
    """Decode seconds of a stored file from start seconds in, mono float32 at rate, exact to the sample.

    What comes before start is decoded and dropped: seeking the input instead lands tens of ms off in MP3 and at
    times on nothing near the end of FLAC or at Ogg page boundaries (measured with imageio-ffmpeg's ffmpeg)."""
    _source_head(path, limits)
    with _ffmpeg_input(path) as (in_args, _):
        args = [*in_args, "-ss", f"{max(0.0, start):.6f}", *_output_args(limits, rate, seconds)]
        result = run_ffmpeg(args, None, limits.timeout, limits.memory_bytes, limits.cpu_seconds)
    if result.returncode != 0 and not result.stdout:
        raise BadAudio(f"I couldn't decode {path.name}: {_failure_reason(result.returncode, result.stderr, b'')}.")
    samples = np.frombuffer(result.stdout, dtype=np.float32, count=len(result.stdout) // 4)
    _clean(samples)
    return Audio(samples, rate)


def _source_head(source: bytes | Path, limits: Limits) -> bytes:
    """Check a source's size (and that a path is a regular file); return its first bytes."""
    if isinstance(source, bytes):
        check_declared(len(source), None, limits)
        head = source[:64]
    else:
        try:
            info = source.stat()
            if not stat.S_ISREG(info.st_mode):
                raise BadAudio(f"Can't read {source.name}: it is not a regular file.")
            check_declared(info.st_size, None, limits)
            with source.open("rb") as fh:
                head = fh.read(64)
        except OSError as exc:
            raise BadAudio(f"Can't read {source.name}: {exc.strerror or exc}.") from exc
    if not head:
        raise BadAudio("That file is empty.")
    return head


def decode_stream(
    source: bytes | Path, limits: Limits, chunk_seconds: float = 30.0
) -> Generator[np.ndarray, None, None]:
    """Decode bytes or a regular file to 48 kHz mono float32 chunks of at most chunk_seconds each, as ffmpeg
    produces them, so memory follows the chunk size, not the input's length. A video's first audio track is used.

    Size and file checks happen now; decoding errors, TooLong (after the chunks within the limit) and TooCostly
    are raised while iterating. Closing the iterator early kills ffmpeg and removes any temporary file."""
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, not {chunk_seconds!r}")
    head = _source_head(source, limits)
    return _stream(source, head, limits, max(1, int(chunk_seconds * SAMPLE_RATE)))


def _stream(source: bytes | Path, head: bytes, limits: Limits, chunk: int) -> Generator[np.ndarray, None, None]:
    max_samples = int(limits.max_seconds * SAMPLE_RATE)
    total = 0
    with (
        _ffmpeg_input(source) as (in_args, stdin),
        _FFmpeg(
            in_args + _output_args(limits), stdin, limits.timeout, limits.memory_bytes, limits.cpu_seconds, "Decoding"
        ) as child,
    ):
        while True:
            samples = np.empty(chunk, dtype=np.float32)
            view, got = memoryview(samples.data).cast("B"), 0
            while got < len(view) and (n := child.read_into(view[got:])):
                got += n
            samples = samples[: got // 4]
            if not len(samples):
                break
            total += len(samples)
            if total > max_samples:
                raise TooLong(f"That sound is longer than the {limits.max_seconds:.0f} s limit.")
            _clean(samples)
            yield samples
        returncode = child.finish()
        if returncode != 0 and total == 0:
            log.debug("ffmpeg failed (%s): %s", returncode, child.stderr.strip()[-500:])
            raise BadAudio(f"I couldn't decode that file: {_failure_reason(returncode, child.stderr, head)}.")
    if total == 0:
        raise BadAudio("That file contains no audio.")
    if returncode != 0:
        log.info("ffmpeg reported errors but produced audio; keeping %.2f s", total / SAMPLE_RATE)


class PreviewFormat(TypedDict):
    """How one preview format is encoded: muxer, encoder, and its starting and lowest bitrates in kbit/s."""

    format: str
    codec: str
    bitrate: int
    min_bitrate: int


PREVIEW_FORMATS: dict[str, PreviewFormat] = {
    "ogg": {"format": "ogg", "codec": "libopus", "bitrate": 64, "min_bitrate": 16},
    "mp3": {"format": "mp3", "codec": "libmp3lame", "bitrate": 128, "min_bitrate": 32},
}


def _encode_preview(pcm: bytes, fmt: str, bitrate: int, timeout: float, memory_bytes: int) -> bytearray:
    """Encode mono s16le PCM at SAMPLE_RATE to a preview in memory."""
    spec = PREVIEW_FORMATS[fmt]
    args = ["-format_whitelist", "s16le", "-codec_whitelist", "pcm_s16le", "-protocol_whitelist", "pipe"]
    args += ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-threads", "1"]
    args += ["-c:a", spec["codec"], "-b:a", f"{bitrate}k"] + (["-ar", "44100"] if fmt == "mp3" else [])
    args += ["-f", spec["format"], "pipe:1"]
    result = run_ffmpeg(args, pcm, timeout, memory_bytes, task="Making the preview")
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"ffmpeg could not encode a {fmt} preview ({result.returncode}): {result.stderr[-300:]}")
    return result.stdout


def _replace_atomically(path: Path, data: bytes | bytearray) -> None:
    """Write data to a unique temporary file beside path, fsync it and rename it over path: readers of path see
    the old file or the new one, whole, and concurrent writers each rename a complete file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.{os.getpid()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_preview(
    audio: Audio,
    path: Path,
    fmt: str,
    max_bytes: int,
    max_seconds: float = 600.0,
    *,
    timeout: float = 60.0,
    memory_bytes: int = 1024 * MB,
) -> Path:
    """Write an OGG/Opus or MP3 preview that fits max_bytes, trimming if it must; each encoding gets timeout."""
    spec = PREVIEW_FORMATS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown preview format {fmt!r}")
    pcm = (audio.samples * 32767).astype("<i2").tobytes()
    seconds = min(audio.duration, max_seconds)
    bitrate = min(spec["bitrate"], int(max_bytes * 8 * 0.85 / max(seconds, 0.1) / 1000))
    for _ in range(6):  # encoders overshoot their target on hard material: shrink and retry
        if bitrate < spec["min_bitrate"]:
            seconds *= bitrate / spec["min_bitrate"]
            bitrate = spec["min_bitrate"]
        samples = max(SAMPLE_RATE // 1000, int(seconds * SAMPLE_RATE))
        encoded = _encode_preview(pcm[: 2 * samples], fmt, bitrate, timeout, memory_bytes)
        if len(encoded) <= max_bytes:
            break
        bitrate = int(bitrate * max_bytes / len(encoded) * 0.9)
    else:
        raise TooLarge(f"I couldn't make a preview smaller than {max_bytes / MB:.1f} MB.")
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, encoded)
    return path
