"""Exact identification: landmark fingerprints of real sounds against degraded queries.

Library: Debian hydrogen-drumkits and lmms-common samples; four hydrogen kits are held out as negatives, with
synthesised noise and silence. Writes its section of bench/RESULTS.md between the fingerprint markers.

Run: python -m bench.fingerprint [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.machine import INTERESTING_FLAGS, _cpuinfo
from bench.sections import block, write_section
from bot.importer import walk
from core import audio
from core import fingerprint as fpr

log = logging.getLogger(__name__)

SR = audio.SAMPLE_RATE
ROOTS = (Path("/usr/share/hydrogen/data/drumkits"), Path("/usr/share/lmms/samples"))
HOLDOUT_KITS = ("Gimme A Hand 1.0", "rumpf_kit_z01_h2", "circAfrique v4", "ElectricEmpireKit")
LIMITS = audio.Limits(max_bytes=64 * audio.MB, max_seconds=600.0, timeout=30.0)
RESULTS = Path(__file__).parent / "RESULTS.md"
DUPLICATE_CORRELATION = 0.9  # two files whose waveforms correlate this well are one recording
BIG_LIBRARY = 10_000


@dataclass(frozen=True)
class Sound:
    """One decoded file."""

    name: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SR


@dataclass(frozen=True)
class Outcome:
    """What one query gave."""

    variant: str
    truth: int | None  # library index, None for a negative
    decided: int | None
    top: int | None
    offset_error: float | None  # seconds, when decided correctly
    latency: float  # seconds: fingerprint + match
    cpu: float  # of which CPU seconds (this thread), which other processes on the machine don't inflate
    votes: int
    score: float  # the best match's decision score (core/fingerprint.py), from its confidence
    hashes: int


# --- corpus -----------------------------------------------------------------------------------------------------


def load_corpus() -> tuple[list[Sound], list[Sound], int, int]:
    """Decodable sounds (exact audio duplicates dropped), split into library and held-out kits."""
    library: list[Sound] = []
    held_out: list[Sound] = []
    seen: set[str] = set()
    failed = copies = 0
    for path in walk(list(ROOTS)):
        try:
            samples = audio.decode(path.read_bytes(), LIMITS).samples
        except Exception as exc:  # some lmms .ogg files don't decode
            log.debug("skipping %s: %s", path, exc)
            failed += 1
            continue
        digest = hashlib.sha256(samples.tobytes()).hexdigest()
        if digest in seen:
            copies += 1
            continue
        seen.add(digest)
        sound = Sound(str(path), samples)
        (held_out if any(f"/{kit}/" in sound.name for kit in HOLDOUT_KITS) else library).append(sound)
    return library, held_out, failed, copies


def _correlation(a: np.ndarray, b: np.ndarray, offset: float) -> float:
    """Peak normalised cross-correlation of a placed at offset seconds inside b, searched over +-2 frames."""
    from scipy.signal import correlate

    slack = int(2 * fpr.FRAME_SECONDS * SR)
    start = int(round(offset * SR))
    a0, b0 = max(0, -start), max(0, start)
    n = min(len(a) - a0, len(b) - b0)
    if n < SR // 20:
        return 0.0
    x = a[a0 : a0 + n].astype(np.float64)
    y = b[max(0, b0 - slack) : b0 + n + slack].astype(np.float64)
    c = correlate(y, x, mode="valid", method="fft")
    power = np.concatenate([[0.0], np.cumsum(y**2)])
    energy = np.sqrt(np.maximum(power[n:] - power[:-n], 0.0) * (x**2).sum())
    return float(np.max(np.abs(c) / np.maximum(energy, 1e-12))) if len(c) else 0.0


def same_recording(sound: Sound, index: fpr.FingerprintIndex, sounds: list[Sound], fp: fpr.Fingerprint) -> int | None:
    """The library sound that is the same recording as this one (a near-duplicate), if any."""
    for m in index.match(fp, top=3):
        if m.votes >= 3 and _correlation(sound.samples, sounds[m.sample_id].samples, m.offset) >= DUPLICATE_CORRELATION:
            return m.sample_id
    return None


# --- degradations -----------------------------------------------------------------------------------------------


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) if len(x) else 0.0


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, pink: bool = False) -> np.ndarray:
    """x plus white or pink noise at snr_db relative to x's mean power."""
    noise = rng.standard_normal(len(x))
    if pink:
        spectrum = np.fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, len(x))
    noise *= np.sqrt(_power(x) / max(_power(noise), 1e-20) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def phone(x: np.ndarray) -> np.ndarray:
    """300-3400 Hz band-pass, then Opus at 16 kbit/s and back."""
    from scipy.signal import butter, sosfilt

    band = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos"), x).astype(np.float32)
    cmd = [audio.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1"]
    cmd += ["-i", "pipe:0", "-c:a", "libopus", "-b:a", "16k", "-f", "ogg", "pipe:1"]
    ogg = subprocess.run(cmd, input=band.tobytes(), capture_output=True, check=True).stdout
    return audio.decode(ogg, LIMITS).samples


def echo(x: np.ndarray) -> np.ndarray:
    """Two discrete echoes: 120 ms at -6 dB and 270 ms at -12 dB."""
    y = x.astype(np.float64).copy()
    for delay, gain in ((0.12, 0.5), (0.27, 0.25)):
        d = int(delay * SR)
        y[d:] += gain * x[:-d]
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float = 0.6) -> np.ndarray:
    """Convolution with a synthetic room: direct sound, then exponentially decaying noise (RT60 0.6 s) as loud."""
    from scipy.signal import fftconvolve

    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[: int(0.005 * SR)] = 0
    ir /= np.sqrt((ir**2).sum())  # direct-to-reverberant ratio 0 dB
    ir[0] = 1.0
    y = fftconvolve(x, ir)[: len(x)]
    return (y / max(1e-9, np.abs(y).max()) * max(1e-9, np.abs(x).max())).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Played factor times faster (pitch moves too, like a tape or a resampled file)."""
    from scipy.signal import resample_poly

    return resample_poly(x, 1000, int(round(1000 * factor))).astype(np.float32)


@dataclass(frozen=True)
class Variant:
    """One kind of query: an excerpt length, the shortest source it needs, and a degradation."""

    name: str
    seconds: float
    degrade: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    shift: float = 0.0  # seconds of silence put before the excerpt


def _pad(x: np.ndarray, _: np.random.Generator) -> np.ndarray:
    return np.concatenate([np.zeros(SR, np.float32), x, np.zeros(SR, np.float32)])


VARIANTS = [
    Variant("clean 2 s", 2, lambda x, r: x),
    Variant("white noise 10 dB, 2 s", 2, lambda x, r: add_noise(x, 10, r)),
    Variant("white noise 5 dB, 2 s", 2, lambda x, r: add_noise(x, 5, r)),
    Variant("white noise 0 dB, 2 s", 2, lambda x, r: add_noise(x, 0, r)),
    Variant("pink noise 10 dB, 2 s", 2, lambda x, r: add_noise(x, 10, r, pink=True)),
    Variant("pink noise 5 dB, 2 s", 2, lambda x, r: add_noise(x, 5, r, pink=True)),
    Variant("pink noise 0 dB, 2 s", 2, lambda x, r: add_noise(x, 0, r, pink=True)),
    Variant("phone band + Opus 16 kbit/s, 2 s", 2, lambda x, r: phone(x)),
    Variant("echo, 2 s", 2, lambda x, r: echo(x)),
    Variant("room reverb, 2 s", 2, reverb),
    Variant("clean 1 s", 1, lambda x, r: x),
    Variant("white noise 10 dB, 1 s", 1, lambda x, r: add_noise(x, 10, r)),
    Variant("clean 5 s", 5, lambda x, r: x),
    Variant("1 s silence + 2 s + 1 s silence", 2, _pad, shift=1.0),
    Variant("speed +1%, 2 s", 2, lambda x, r: speed(x, 1.01)),
    Variant("speed -1%, 2 s", 2, lambda x, r: speed(x, 0.99)),
]


def synthetic(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A sound that is in no library: coloured noise bursts, tone clusters, chirps and clicks, mixed."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros(n)
    part: np.ndarray
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(4)
        start = rng.uniform(0, seconds * 0.7)
        env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(1, 20)), 0.0)
        if kind == 0:
            part = add_noise(np.ones(n, np.float32), 0, rng, pink=bool(rng.integers(2))) - 1
        elif kind == 1:
            f0 = rng.uniform(50, 2000)
            part = np.sum([np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6)], axis=0)
        elif kind == 2:
            f0, f1 = rng.uniform(100, 4000, 2)
            part = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
        else:
            part = np.zeros(n)
            part[:: int(rng.uniform(0.05, 0.4) * SR)] = 1.0
            env = np.ones(n)
        y += rng.uniform(0.1, 0.5) * env * part
    return (y / max(1e-9, np.abs(y).max()) * 0.7).astype(np.float32)


# --- evaluation -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indexed:
    """A fingerprint index and each indexed sound's audio at the fingerprints' rate, to verify matches against."""

    index: fpr.FingerprintIndex
    heard: dict[int, np.ndarray]

    def add(self, sample_id: int, samples: np.ndarray, fp: fpr.Fingerprint) -> None:
        """Index a sound (float16 audio is kept: 10,000 sounds would take 2 GB in float32)."""
        self.index.add(sample_id, fp)
        self.heard[sample_id] = fpr._resample(samples, SR).astype(np.float16)


# matches, the decision, query hash count, seconds, CPU seconds
Result = tuple[list[fpr.Match], fpr.Match | None, int, float, float]


def query(indexed: Indexed, samples: np.ndarray) -> Result:
    """Fingerprint, match and decide one query (verifying borderline matches against their sounds' audio, as
    core/search.py does against the stored originals): the matches, the decision, hash count and time taken."""
    began, began_cpu = time.perf_counter(), time.thread_time()
    fp = fpr.query_fingerprint(samples)
    matches = indexed.index.match(fp)
    likeness = {
        m.sample_id: fpr.likeness(samples, SR, indexed.heard[m.sample_id].astype(np.float32), m.offset)
        for m in fpr.to_verify(matches)
    }
    decided = fpr.decide(matches, likeness)
    return matches, decided, len(fp.hashes), time.perf_counter() - began, time.thread_time() - began_cpu


def _outcome(variant: str, truth: int | None, true_offset: float, result: Result) -> Outcome:
    matches, decided, hashes, latency, cpu = result
    error = abs(decided.offset - true_offset) if decided and decided.sample_id == truth else None
    return Outcome(
        variant,
        truth,
        decided.sample_id if decided else None,
        matches[0].sample_id if matches else None,
        error,
        latency,
        cpu,
        matches[0].votes if matches else 0,
        _score(matches[0].confidence) if matches else 0.0,
        hashes,
    )


def _score(confidence: float) -> float:
    """The decision score a confidence was mapped from (confidence = score / (score + SCORE))."""
    return round(fpr.SCORE * confidence / max(1e-12, 1 - confidence), 6)


def excerpt_start(x: np.ndarray, length: int, rng: np.random.Generator, within_db: float = 30.0) -> int:
    """A random start (10 ms steps) among excerpts within within_db of the loudest one, so not a silent tail."""
    step = SR // 100
    power = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, len(x) - length + 1, step)
    energy = power[starts + length] - power[starts]
    good = starts[energy >= energy.max() * 10 ** (-within_db / 10)]
    return int(good[rng.integers(len(good))])


def positives(
    indexed: Indexed, sounds: list[Sound], per_sound: int, variants: list[Variant], seed: int = 0
) -> list[Outcome]:
    """Degraded excerpts of library sounds long enough for each variant."""
    out = []
    for v_no, variant in enumerate(variants):
        for s_no, sound in enumerate(sounds):
            if sound.seconds < variant.seconds:
                continue
            for k in range(per_sound):
                rng = np.random.default_rng([v_no, s_no, seed + k])
                length = int(variant.seconds * SR)
                start = excerpt_start(sound.samples, length, rng)
                q = variant.degrade(sound.samples[start : start + length], rng)
                out.append(_outcome(variant.name, s_no, start / SR - variant.shift, query(indexed, q)))
    return out


def negatives(indexed: Indexed, held_out: list[Sound], synthesised: int, seed: int = 0) -> list[Outcome]:
    """Held-out sounds (2 s excerpts of longer ones), synthesised sounds and silence: none is in the library."""
    out = []
    for i, sound in enumerate(held_out):
        rng = np.random.default_rng([99, seed, i])
        start = int(rng.integers(0, max(1, len(sound.samples) - 2 * SR)))
        out.append(_outcome("held-out kit sound", None, 0.0, query(indexed, sound.samples[start : start + 2 * SR])))
    for i in range(synthesised):
        rng = np.random.default_rng([98, seed, i])
        out.append(_outcome("synthesised sound", None, 0.0, query(indexed, synthetic(rng, rng.uniform(0.5, 4)))))
    for seconds in (0.5, 2.0, 5.0):
        out.append(_outcome("digital silence", None, 0.0, query(indexed, np.zeros(int(seconds * SR), np.float32))))
    return out


@dataclass(frozen=True)
class Library:
    """The indexed library and what building it cost."""

    sounds: list[Sound]
    indexed: Indexed
    blob_bytes: int
    cpu_seconds: float  # fingerprinting only
    duplicates: int  # files dropped as the same recording as an earlier one

    @property
    def seconds(self) -> float:
        """Total audio."""
        return sum(s.seconds for s in self.sounds)

    @property
    def index(self) -> fpr.FingerprintIndex:
        """The fingerprint index."""
        return self.indexed.index


def build_library(sounds: list[Sound]) -> Library:
    """Fingerprint and index sounds, dropping near-duplicates (the same recording in two kits)."""
    indexed, kept, blob_bytes, cpu, duplicates = Indexed(fpr.FingerprintIndex(), {}), list[Sound](), 0, 0.0, 0
    for sound in sounds:
        began = time.process_time()
        fp = fpr.fingerprint(sound.samples)
        cpu += time.process_time() - began
        if same_recording(sound, indexed.index, kept, fp) is not None:
            duplicates += 1
            continue
        blob = fpr.to_blob(fp)
        indexed.add(len(kept), sound.samples, fpr.from_blob(blob))  # as the store will: from the stored blobs
        kept.append(sound)
        blob_bytes += len(blob)
    return Library(kept, indexed, blob_bytes, cpu, duplicates)


def true_negatives(held_out: list[Sound], library: Library) -> tuple[list[Sound], int]:
    """Held-out sounds that are not the same recording as a library sound, and how many were."""
    kept = [s for s in held_out if same_recording(s, library.index, library.sounds, fpr.fingerprint(s.samples)) is None]
    return kept, len(held_out) - len(kept)


def filler(rng: np.random.Generator, sounds: list[Sound]) -> np.ndarray:
    """A padding sound for the large index: two library sounds, each re-pitched by 6-25% (some reversed), mixed."""
    from scipy.signal import resample_poly

    parts = []
    for _ in range(2):
        source = sounds[int(rng.integers(len(sounds)))].samples[: 6 * SR]
        if rng.integers(2):
            source = source[::-1]
        factor = 1 + float(rng.choice([-1, 1]) * rng.uniform(0.06, 0.25))
        parts.append(resample_poly(source, 1000, int(1000 * factor)) * rng.uniform(0.3, 1.0))
    out = np.zeros(max(len(p) for p in parts) + SR // 2)
    for part in parts:
        start = int(rng.integers(0, len(out) - len(part) + 1))
        out[start : start + len(part)] += part
    return out.astype(np.float32)


def big_index(library: Library, total: int, rng: np.random.Generator) -> tuple[Indexed, float, int]:
    """The library padded with filler sounds to total samples: the index, filler seconds, filler bytes."""
    indexed = Indexed(fpr.FingerprintIndex(), {})
    for i, sound in enumerate(library.sounds):
        indexed.add(i, sound.samples, fpr.fingerprint(sound.samples))
    seconds, blob_bytes = 0.0, 0
    for i in range(len(library.sounds), total):
        x = filler(rng, library.sounds)
        blob = fpr.to_blob(fpr.fingerprint(x))
        indexed.add(i, x, fpr.from_blob(blob))
        seconds += len(x) / SR
        blob_bytes += len(blob)
    return indexed, seconds, blob_bytes


# --- report -----------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


@dataclass(frozen=True)
class Summary:
    """Per-variant figures."""

    name: str
    n: int
    correct: float  # decided and right
    wrong: float  # decided and wrong
    top: float  # best match right, before the decision
    offset_p50: float  # ms
    offset_p95: float
    latency_p50: float  # ms
    latency_p95: float
    cpu_p50: float  # ms


def summarise(outcomes: list[Outcome], name: str) -> Summary:
    """Figures for the outcomes of one variant."""
    rows = [o for o in outcomes if o.variant == name]
    n = len(rows)
    errors = [o.offset_error for o in rows if o.offset_error is not None]
    latencies = [o.latency for o in rows]
    return Summary(
        name,
        n,
        sum(o.decided == o.truth for o in rows) / n,
        sum(o.decided is not None and o.decided != o.truth for o in rows) / n,
        sum(o.top == o.truth for o in rows) / n,
        _ms(errors, 50),
        _ms(errors, 95),
        _ms(latencies, 50),
        _ms(latencies, 95),
        _ms([o.cpu for o in rows], 50),
    )


def margin_table(pos: list[Outcome], neg: list[Outcome]) -> str:
    """Calibration: what each decision score lets through, for negatives and for positives per variant."""
    names = list(dict.fromkeys(o.variant for o in pos))
    lines = ["| score >= | negatives passed | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for m in sorted({*range(16, 42, 2), fpr.SCORE}):
        fp = np.mean([o.score >= m for o in neg])
        accs = [np.mean([o.score >= m and o.top == o.truth for o in pos if o.variant == v]) for v in names]
        lines.append(f"| {m:g} | {_pct(float(fp))} | " + " | ".join(_pct(float(a)) for a in accs) + " |")
    return "\n".join(lines)


def _cpu() -> str:
    model, flags = _cpuinfo()
    found = [f for f in INTERESTING_FLAGS if f in flags]
    return f"{model} ({', '.join(found) if found else 'no avx2/avx512/amx flags'})"


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


@dataclass(frozen=True)
class Facts:
    """What the run was and measured besides the queries."""

    command: str
    date: str
    minutes: float
    library: int
    library_hours: float
    failed: int
    copies: int
    duplicates: int
    long1: int
    long2: int
    long5: int
    per_sound: int
    negatives_dropped: int
    big: int
    filler_hours: float
    postings: int
    speed: float
    mb_per_hour: float
    filler_mb_per_hour: float
    landmarks_per_second: float
    load: str  # 1-minute load averages at the start and end of the run


def _package(sound: Sound) -> str:
    return "hydrogen-drumkits" if "/hydrogen/" in sound.name else "lmms-common"


def breakdown(pos: list[Outcome], sounds: list[Sound]) -> list[str]:
    """Identified per package, and how many misses went to a sound of the same folder (kit or lmms category)."""
    names = list(dict.fromkeys(o.variant for o in pos))
    lines = [
        "| query | identified: hydrogen-drumkits | identified: lmms-common | best match wrong: of which same folder |",
        "|---|---|---|---|",
    ]
    for name in names:
        rows = [o for o in pos if o.variant == name and o.truth is not None]
        cells = []
        for package in ("hydrogen-drumkits", "lmms-common"):
            mine = [o for o in rows if o.truth is not None and _package(sounds[o.truth]) == package]
            cells.append(f"{_pct(sum(o.decided == o.truth for o in mine) / max(1, len(mine)))} of {len(mine)}")
        wrong = [(o.top, o.truth) for o in rows if o.top is not None and o.truth is not None and o.top != o.truth]
        same = sum(Path(sounds[top].name).parent == Path(sounds[truth].name).parent for top, truth in wrong)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {len(wrong)}: {same} |")
    return lines


def shortfalls(rows: dict[str, Summary], pos: list[Outcome], sounds: list[Sound]) -> list[str]:
    """Why the identification targets are not met, in this run's figures."""
    notes = []
    clean = rows["clean 2 s"]
    if clean.correct < 0.99:
        missed = [o for o in pos if o.variant == clean.name and o.decided != o.truth and o.truth is not None]
        names = ", ".join(sorted({Path(sounds[o.truth].name).name for o in missed if o.truth is not None}))
        notes.append(f"{clean.name}: {len(missed)} of {clean.n} not named ({names}).")
    for name in ("white noise 10 dB, 2 s", "phone band + Opus 16 kbit/s, 2 s"):
        r = rows[name]
        if r.correct >= 0.95:
            continue
        mine = [o for o in pos if o.variant == name and o.truth is not None]
        wrong = [(o.top, o.truth) for o in mine if o.top is not None and o.truth is not None and o.top != o.truth]
        same = sum(Path(sounds[top].name).parent == Path(sounds[truth].name).parent for top, truth in wrong)
        hits = sum(_package(sounds[o.truth]) == "hydrogen-drumkits" for o in mine if o.truth is not None)
        rate = {
            package: np.mean(
                [o.decided == o.truth for o in mine if o.truth is not None and _package(sounds[o.truth]) == package]
            )
            for package in ("hydrogen-drumkits", "lmms-common")
        }
        notes.append(
            f"{name}: the best match was right for {_pct(r.top)}; the decision (a score of {fpr.SCORE:g}, votes "
            f"and verified peaks over the runner-up's, or a spectral correlation of {fpr.CORRELATION:g} or a "
            f"waveform correlation of {fpr.WAVE_CORRELATION:g} with the sample's audio; for false positives <= 1% "
            f"with 10k samples) names {_pct(r.correct)}. "
            f"Of the {len(wrong)} wrong best matches, "
            f"{same} were another file of the same folder (velocity layers or articulations of one instrument)."
            f" By package: hydrogen-drumkits {_pct(float(rate['hydrogen-drumkits']))}, "
            f"lmms-common {_pct(float(rate['lmms-common']))} ({hits} of the {len(mine)} queries come from "
            "hydrogen-drumkits files, nearly all single hits with a decaying tail)."
        )
    return notes


def report(f: Facts, pos: list[Outcome], neg: list[Outcome], big: list[Outcome], sounds: list[Sound]) -> str:
    """The Markdown section."""
    names = list(dict.fromkeys(o.variant for o in pos))
    rows = {name: summarise(pos, name) for name in names}
    big_rows = {name: summarise(big, name) for name in dict.fromkeys(o.variant for o in big if o.truth is not None)}
    fp_rate = sum(o.decided is not None for o in neg) / len(neg)
    big_neg = [o for o in big if o.truth is None]
    big_fp = sum(o.decided is not None for o in big_neg) / max(1, len(big_neg))
    big_two = [o for o in big if o.truth is not None]  # the 2 s queries: clean and with 10 dB noise
    big_lat = [o.latency for o in big_two]
    errors = [o.offset_error for o in pos if o.offset_error is not None]
    out = [
        "## Exact identification (landmark fingerprints)",
        "",
        f"Produced by **`{f.command}`** on {f.date}, taking {f.minutes:.1f} min. CPU: {_cpu()}; "
        f"one process, numpy/scipy single-threaded; load average {f.load} (start, end), so latencies and speeds "
        "are upper bounds when it exceeds the core count.",
        "",
        f"Library: {f.library} sounds, {f.library_hours * 60:.1f} min of audio (Debian `hydrogen-drumkits` "
        f"without the kits {', '.join(HOLDOUT_KITS)}, plus `lmms-common` samples; {f.failed} files did not "
        f"decode, {f.copies} exact audio copies and {f.duplicates} near-duplicates (waveform correlation "
        f">= {DUPLICATE_CORRELATION} to an indexed file) were dropped). Queries are excerpts of the "
        f"{f.long2} library sounds of at least 2 s ({f.long1} of at least 1 s, {f.long5} of at least 5 s "
        "for the 5 s excerpts), "
        f"{f.per_sound} per sound and variant, from random offsets among those whose excerpt is within 30 dB of the "
        "sound's loudest (so not a silent tail), degraded as named. A query is fingerprinted at 48 kHz from "
        "float samples; decoding is not timed. *Identified* = `decide()` named the right sample; *wrong* = it "
        "named another; *best match* = the top of `match()` was right, before the decision.",
        "",
        "| query | n | identified | wrong | best match | offset error p50 / p95 | latency p50 / p95 (CPU p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        out.append(
            f"| {r.name} | {r.n} | {_pct(r.correct)} | {_pct(r.wrong)} | {_pct(r.top)} | "
            f"{r.offset_p50:.0f} / {r.offset_p95:.0f} ms | {r.latency_p50:.1f} / {r.latency_p95:.1f} "
            f"({r.cpu_p50:.1f}) ms |"
        )
    out += ["", "By package, and where the wrong best matches went:", ""] + breakdown(pos, sounds)
    kinds = list(dict.fromkeys(o.variant for o in neg))
    out += [
        "",
        f"Negatives ({len(neg)}; {f.negatives_dropped} held-out files were dropped as the same recording as a "
        "library file):",
        "",
        "| negative | n | named a sample (false positive) |",
        "|---|---|---|",
    ]
    for kind in kinds:
        ks = [o for o in neg if o.variant == kind]
        out.append(f"| {kind} | {len(ks)} | {_pct(sum(o.decided is not None for o in ks) / len(ks))} |")
    out += [
        "",
        f"At {f.big:,} samples ({f.big - f.library:,} fillers added, each two library sounds re-pitched by "
        f"6-25%, some reversed, mixed: {f.filler_hours * 60:.0f} min; {f.postings:,} landmarks indexed):",
        "",
        "| query | n | identified | wrong | latency p50 / p95 (CPU p50) |",
        "|---|---|---|---|---|",
    ]
    for r in big_rows.values():
        out.append(
            f"| {r.name} | {r.n} | {_pct(r.correct)} | {_pct(r.wrong)} | "
            f"{r.latency_p50:.1f} / {r.latency_p95:.1f} ({r.cpu_p50:.1f}) ms |"
        )
    out.append(f"| negatives | {len(big_neg)} | - | {_pct(big_fp)} | |")
    c2, c1 = rows["clean 2 s"], rows.get("white noise 10 dB, 1 s")
    noisy = [rows["white noise 10 dB, 2 s"], rows["phone band + Opus 16 kbit/s, 2 s"]]
    off95 = _ms(errors, 95)
    lat50 = _ms(big_lat, 50)
    out += [
        "",
        "| target | measured | status |",
        "|---|---|---|",
        f"| top-1 clean 2 s excerpt >= 99% | {_pct(c2.correct)} | {_met(c2.correct >= 0.99)} |",
        "| 2 s with 10 dB noise or phone band >= 95% | "
        + ", ".join(f"{r.name}: {_pct(r.correct)}" for r in noisy)
        + f" | {_met(min(r.correct for r in noisy) >= 0.95)} |",
        f"| 1 s with 10 dB noise: reported | {_pct(c1.correct) if c1 else '-'} | reported |",
        f"| offset error <= 50 ms | p95 over all identified queries {off95:.0f} ms "
        f"(median {_ms(errors, 50):.0f} ms) | {_met(off95 <= 50)} |",
        f"| false positives <= 1% | {_pct(fp_rate)} of {len(neg)} (at {f.big:,} samples: {_pct(big_fp)}) | "
        f"{_met(max(fp_rate, big_fp) <= 0.01)} |",
        f"| query p50 <= 30 ms at 10k samples | p50 {lat50:.1f} ms, p95 {_ms(big_lat, 95):.1f} ms, CPU p50 "
        f"{_ms([o.cpu for o in big_two], 50):.1f} ms (2 s queries, fingerprint + match + audio check, "
        f"n={len(big_lat)}) | "
        f"{_met(lat50 <= 30)} |",
        f"| fingerprinting >= 200x real time, one core | {f.speed:.0f}x (library, CPU time) | "
        f"{_met(float(f.speed) >= 200)} |",
        f"| storage <= 5 MB per hour | {f.mb_per_hour:.2f} MB/h on the library, {f.filler_mb_per_hour:.2f} "
        f"MB/h on the fillers (MB = 2^20 bytes) | {_met(max(f.mb_per_hour, f.filler_mb_per_hour) <= 5)} |",
        "",
        "Anchors: dejavu reports 96% of 2 s and 100% of 5 s queries recognised over a laptop microphone "
        "(music); audfprint's defaults are 20 peaks/s and a fan-out of 3 (about 60 landmarks/s). "
        f"Here: library fingerprints keep up to {fpr.DENSITY:.0f} peaks/s with a fan-out of {fpr.FANOUT} "
        f"(measured {f.landmarks_per_second:.0f} landmarks/s); queries keep up to {fpr.QUERY_DENSITY:.0f} "
        f"peaks/s with a fan-out of {fpr.QUERY_FANOUT} at {fpr.QUERY_SHIFTS} sub-frame shifts. Decision: the "
        f"{fpr.CANDIDATES} samples with most votes are verified peak by peak at their offsets; evidence = votes + "
        f"{fpr.VERIFIED_WEIGHT:g} x (verified peaks - {fpr.CHANCE_WEIGHT:g} x chance); named when evidence - "
        f"{fpr.RIVAL_WEIGHT:g} x the runner-up's >= {fpr.SCORE:g} and its votes lead by {fpr.VOTE_LEAD}; "
        "otherwise named when the query's magnitude spectrogram correlates with the best sample's own audio at "
        f"its offset by >= {fpr.CORRELATION:g} and no less than the runner-up's, or its waveform by >= "
        f"{fpr.WAVE_CORRELATION:g} and {fpr.WAVE_LEAD:g} more than the runner-up's (see core/fingerprint.py). "
        "Here the samples' audio is in memory; the bot reads it from the stored original, one short decode per "
        "candidate checked.",
    ]
    notes = shortfalls(rows, pos, sounds)
    if notes:
        out += ["", "Where a target is not met:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main() -> None:
    """Run the benchmark and write its RESULTS.md section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="a quarter of the files, one query per sound, 1.5k index; prints only"
    )
    parser.add_argument("--calibrate", action="store_true", help="print the decision-margin table on other seeds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the RESULTS.md to write the section into")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    began, load = time.monotonic(), _load()
    library_sounds, held_out, failed, copies = load_corpus()
    if args.quick:
        library_sounds, held_out = library_sounds[::4], held_out[::3]
    log.info("decoded %d library and %d held-out files", len(library_sounds), len(held_out))
    library = build_library(library_sounds)
    negs, dropped = true_negatives(held_out, library)
    log.info("indexed %d sounds (%.1f min); %d negatives", len(library.sounds), library.seconds / 60, len(negs))
    per_sound = 1 if args.quick else 2
    synthesised = 40 if args.quick else 150
    if args.calibrate:
        pos = positives(library.indexed, library.sounds, 1, VARIANTS, seed=1000)
        neg = negatives(library.indexed, negs[1::2], synthesised, seed=1000)
        print(margin_table(pos, neg))
        return
    pos = positives(library.indexed, library.sounds, per_sound, VARIANTS)
    log.info("%d positive queries done", len(pos))
    neg = negatives(library.indexed, negs, synthesised)
    big_total = 1_500 if args.quick else BIG_LIBRARY
    big_indexed, filler_seconds, filler_bytes = big_index(library, big_total, np.random.default_rng(7))
    big_variants = [v for v in VARIANTS if v.name in ("clean 2 s", "white noise 10 dB, 2 s")]
    big = positives(big_indexed, library.sounds, 1, big_variants) + negatives(big_indexed, negs, synthesised)
    log.info("%d queries against %d samples done", len(big), len(big_indexed.index))
    postings = library.blob_bytes // 8
    facts = Facts(
        command="python -m bench.fingerprint" + (" --quick" if args.quick else ""),
        date=time.strftime("%Y-%m-%d %H:%M"),
        minutes=(time.monotonic() - began) / 60,
        library=len(library.sounds),
        library_hours=library.seconds / 3600,
        failed=failed,
        copies=copies,
        duplicates=library.duplicates,
        long1=sum(s.seconds >= 1 for s in library.sounds),
        long2=sum(s.seconds >= 2 for s in library.sounds),
        long5=sum(s.seconds >= 5 for s in library.sounds),
        per_sound=per_sound,
        negatives_dropped=dropped,
        big=len(big_indexed.index),
        filler_hours=filler_seconds / 3600,
        postings=postings + filler_bytes // 8,
        speed=library.seconds / library.cpu_seconds,
        mb_per_hour=library.blob_bytes / library.seconds * 3600 / audio.MB,
        filler_mb_per_hour=filler_bytes / filler_seconds * 3600 / audio.MB,
        landmarks_per_second=postings / library.seconds,
        load=f"{load} / {_load()} on {os.cpu_count()} cores",
    )
    text = report(facts, pos, neg, big, library.sounds)
    print(text)
    if not args.quick:
        write_section(block("fingerprint", text), args.out)
        log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
