"""Timelines of long recordings: speed, peak memory for an hour, and text queries while one runs.

    python -m bench.timeline [--quick] [--model DIR] [--minutes N] [--no-write]

The recordings are real sounds (Debian's lmms-common samples and hydrogen-drumkits) one after another with pauses
between, made once into bench/out/timeline/. Each measurement runs in a fresh process through the door
(Request(Command.TIMELINE)), the model being the random-weight full-size CLAP of bench/model.py unless --model:

- speed: seconds of audio analysed per second of wall time, on a 10-minute FLAC and a 3-minute MP4 video;
- text queries (bench.interactive's 10k synthetic library and query texts): p95 idle, then while a timeline runs;
- peak RSS for a 1-hour WAV: the tests' trained tiny CLAP analyses the whole hour, the full-size model the first
  --minutes of it (the whole hour would take it a quarter of an hour or more), RSS read at every batch to show it flat;
- the chart and subtitles of a 100-second programme of named sounds, made by `shira timeline`, with the random
  full-size model (bench/timeline.png: its labels mean nothing) and with the tests' trained tiny CLAP
  (bench/timeline-trained.png), the only CLAP that hears which can be had offline.

Prints one JSON object and writes the section between the timeline markers of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import corpus, machine
from bench.interactive import Latencies, build_library, query_texts, text_queries
from bench.memory import _status, reset_peak, resolve_model, settled_rss
from bench.sections import write_section
from core.audio import SAMPLE_RATE, Limits, decode, ffmpeg_exe
from core.errors import BadAudio

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
OUT = HERE / "out" / "timeline"
RESULTS = HERE / "RESULTS.md"
MARKERS = ("<!-- timeline:start -->", "<!-- timeline:end -->")
MB = 2**20
LMMS = Path("/usr/share/lmms/samples")
SOURCE_LIMITS = Limits(max_bytes=50 * MB, max_seconds=60.0, timeout=60.0)
SPACE = "recordings"  # no labels of its own: timelines score against the built-in vocabulary
LONGEST_SOUND = 12.0  # seconds of one source file used at most
# The demo programme: (what, file under LMMS, or a drum pattern from the kits), each followed by silence.
DEMO = (
    ("church organ", "instruments/church_organ01.ogg"),
    ("drum pattern", "drums"),
    ("crowd", "misc/raving_crowd01.ogg"),
    ("flute", "instruments/flute01.ogg"),
    ("breakbeat", "beats/break01.ogg"),
    ("piano", "instruments/piano02.ogg"),
    ("applause", "misc/applause01.ogg"),
    ("bell choir", "stringsnpads/bell_choir01.ogg"),
    ("wind chimes", "effects/wind_chimes01.ogg"),
)
DEMO_PAUSE = 3.0
KEEP_SECONDS = 3600.0  # a measurement's result is reused for this long by a rerun with the same spec


# ----------------------------------------------------------------------------------------- the recordings


def sound_files() -> list[Path]:
    """Every lmms sample and drum-kit sound, installing the Debian packages if they are missing."""
    from bot.importer import walk

    corpus.install()
    if not LMMS.is_dir():
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "lmms-common"], check=True, env=env)
    return list(walk([LMMS, corpus.ROOT]))


def _sound(path: Path) -> np.ndarray | None:
    try:
        return decode(path.read_bytes(), SOURCE_LIMITS).samples[: int(LONGEST_SOUND * SAMPLE_RATE)]
    except (BadAudio, OSError) as exc:
        log.info("skipping %s: %s", path, exc)
        return None


def programme(files: list[Path], seconds: float, seed: int = 0) -> Iterator[np.ndarray]:
    """Random real sounds, each followed by 0.2-4 s of near-silence, as 48 kHz chunks adding up to seconds."""
    rng = np.random.default_rng(seed)
    left = int(seconds * SAMPLE_RATE)
    while left > 0:
        sound = _sound(files[int(rng.integers(len(files)))])
        if sound is None:
            continue
        pause = (rng.standard_normal(int(rng.uniform(0.2, 4.0) * SAMPLE_RATE)) * 1e-4).astype(np.float32)
        for part in (sound, pause):
            part = part[:left]
            left -= len(part)
            yield part


def drum_pattern(files: list[Path], bars: int = 4, bpm: float = 100.0) -> np.ndarray:
    """A kick, snare and hat pattern from the first kit's sounds."""
    kit = [p for p in files if p.is_relative_to(corpus.ROOT)]
    pick = {name: next(p for p in kit if name in p.name.lower()) for name in ("kick", "snare", "hat")}
    hits = {name: _sound(path) for name, path in pick.items()}
    step = int(60 / bpm / 2 * SAMPLE_RATE)  # eighth notes
    out = np.zeros(step * 8 * bars + SAMPLE_RATE, np.float32)
    for i in range(8 * bars):
        for name in ("hat",) + (("kick",) if i % 4 == 0 else ()) + (("snare",) if i % 4 == 2 else ()):
            hit = hits[name]
            if hit is not None:
                end = min(len(out), i * step + len(hit))
                out[i * step : end] += 0.7 * hit[: end - i * step]
    return np.clip(out, -1, 1)


def demo(files: list[Path]) -> tuple[list[np.ndarray], list[tuple[str, float, float]]]:
    """The named programme: its chunks and what plays when (seconds)."""
    chunks: list[np.ndarray] = [np.zeros(int(DEMO_PAUSE * SAMPLE_RATE), np.float32)]
    spans, at = [], DEMO_PAUSE
    for name, where in DEMO:
        sound = drum_pattern(files) if where == "drums" else _sound(LMMS / where)
        if sound is None:
            continue
        spans.append((name, at, at + len(sound) / SAMPLE_RATE))
        chunks += [sound, np.zeros(int(DEMO_PAUSE * SAMPLE_RATE), np.float32)]
        at += len(sound) / SAMPLE_RATE + DEMO_PAUSE
    return chunks, spans


def encode(chunks: Iterable[np.ndarray], path: Path, out_args: list[str], video: bool = False) -> Path:
    """Pipe 48 kHz float chunks through ffmpeg into path (written under a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", "color=c=0x204060:s=320x180:r=5"]
    cmd += ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0"]
    if video:
        cmd += ["-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    child = subprocess.Popen([*cmd, *out_args, str(partial)], stdin=subprocess.PIPE)
    assert child.stdin is not None
    with child.stdin:
        for chunk in chunks:
            child.stdin.write(np.clip(chunk, -1, 1).astype(np.float32).tobytes())
    if child.wait() != 0:
        raise RuntimeError(f"ffmpeg could not write {path}")
    partial.rename(path)
    return path


def recording(files: list[Path], name: str, seconds: float, out_args: list[str], video: bool = False) -> Path:
    """A programme of random real sounds, made once into OUT."""
    path = OUT / name
    if not path.exists():
        log.info("making %s (%.0f s of real sounds)", path, seconds)
        encode(programme(files, seconds, seed=len(name)), path, out_args, video)
    return path


FLAC = ["-ar", "44100", "-c:a", "flac"]
MP4 = ["-ar", "44100", "-b:a", "96k", "-movflags", "+faststart"]
WAV_16K = ["-ar", "16000", "-c:a", "pcm_s16le"]


# ----------------------------------------------------------------------------------------- measurements
# Each runs in its own process (python -m bench.timeline --child SPEC), so its memory readings are its own.


@dataclass(frozen=True)
class Run:
    """One timeline through the door."""

    seconds_audio: float
    wall: float
    cpu: float
    rss: tuple[tuple[float, int], ...]  # (seconds analysed, RSS bytes) at each batch
    finished: bool

    @property
    def speed(self) -> float:
        """Seconds of audio analysed per second of wall time."""
        return self.seconds_audio / self.wall


async def timeline_run(engine: Any, path: Path, bound: float | None = None) -> Run:
    """Analyse path through the door; with bound, stop once that many seconds are analysed."""
    from core.files import local_ref
    from core.messages import Command, Request

    rss: list[tuple[float, int]] = []
    enough = asyncio.Event()

    async def progress(seconds: float) -> None:
        rss.append((seconds, _status("VmRSS")))
        if bound is not None and seconds >= bound:
            enough.set()

    request = Request("cli", SPACE, "bench", Command.TIMELINE, audio=(local_ref(path),), progress=progress)
    cpu, start = machine.own_cpu_seconds(), time.perf_counter()
    task = asyncio.create_task(engine.handle(request))
    stop = asyncio.create_task(enough.wait())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    wall = time.perf_counter() - start
    stop.cancel()
    finished = task.done()
    if finished:
        reply = task.result()
        if reply.is_error or reply.timeline is None:
            raise RuntimeError(f"timeline failed: {reply.text}")
        seconds = reply.timeline.duration
    else:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        seconds = rss[-1][0]
    return Run(seconds, wall, machine.own_cpu_seconds() - cpu, tuple(rss), finished)


async def loaded_queries(engine: Any, path: Path, texts: Iterator[str], n: int) -> tuple[list[float], float]:
    """Text query times while a timeline of path runs (stopped after n queries), and the audio it analysed."""
    done = 0.0

    async def progress(seconds: float) -> None:
        nonlocal done
        done = seconds

    from core.files import local_ref
    from core.messages import Command, Request

    request = Request("cli", SPACE, "bench", Command.TIMELINE, audio=(local_ref(path),), progress=progress)
    task = asyncio.create_task(engine.handle(request))
    await asyncio.sleep(2.0)  # decoding starts and the first batches are queued
    loaded: list[float] = []
    while not task.done() and len(loaded) < n:
        loaded += await text_queries(engine, [next(texts)], 0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return loaded, done


def _config(data: Path, model: str) -> Any:
    from bench.indexing import bench_config

    return bench_config(data, model)


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement session (spec["kind"]: "session" or "memory") in this fresh process."""
    from core.engine import Engine

    scratch = OUT / "scratch"
    model, label = resolve_model(spec["model"], scratch)
    data = OUT / f"data-{spec['model_key']}"
    out: dict[str, Any] = {"model": label}
    if spec["kind"] == "session":
        from transformers import ClapConfig

        await build_library(data, int(ClapConfig.from_pretrained(model).projection_dim), spec["library"])
    async with Engine.open(_config(data, model)) as engine:
        began = time.perf_counter()
        await engine.encoder.warm()  # the label vocabulary is embedded once per model and kept in SQLite
        out["label_warm_seconds"] = time.perf_counter() - began
        out["vocabulary"] = len(await engine.encoder.vocabulary())
        await timeline_run(engine, Path(spec["warm"]))  # the audio path's first batches
        if spec["kind"] == "memory":
            baseline = settled_rss()
            exact = reset_peak()
            run = timeline_run(engine, Path(spec["input"]), spec.get("bound"))
            result = await run
            out |= {"baseline": baseline, "peak": _status("VmHWM"), "exact": exact, "run": result.__dict__}
            out["peak_sampled"] = max((r for _, r in result.rss), default=0)
            return out
        texts = iter(query_texts())
        await text_queries(engine, [next(texts) for _ in range(5)], 0.0)
        idle = await text_queries(engine, [next(texts) for _ in range(spec["queries"])], 0.05)
        loaded, analysed = await loaded_queries(engine, Path(spec["input"]), texts, spec["queries"])
        out["text_idle"], out["text_loaded"] = idle, loaded
        out["loaded_audio_seconds"] = analysed
        for name in ("input", "video"):
            out[name] = (await timeline_run(engine, Path(spec[name]))).__dict__
    return out


def kept_child(spec: dict[str, Any]) -> dict[str, Any]:
    """child(spec), or the same measurement's result if one finished in the last KEEP_SECONDS (a rerun resumes)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = OUT / f"child-{digest}.json"
    if path.exists() and time.time() - path.stat().st_mtime < KEEP_SECONDS:
        log.info("%s %s: the result measured at %s", spec["kind"], spec["model_key"], time.ctime(path.stat().st_mtime))
        return dict(json.loads(path.read_text(encoding="utf-8")))
    result = asyncio.run(child(spec))
    path.write_text(json.dumps(result), encoding="utf-8")
    return result


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON."""
    log.info("fresh process: %s %s on %s", spec["kind"], spec["model_key"], Path(spec["input"]).name)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    done = subprocess.run(
        [sys.executable, "-m", "bench.timeline", "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        cwd=HERE.parent,
        env=env,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------------------- the chart


def shira_timeline(model: str, audio: Path, out: Path, labels: str = "", vocabulary: str = "audioset") -> str:
    """Run `shira timeline` on audio, writing out.png and out.srt; returns its summary line."""
    config = OUT / f"shira-{vocabulary}.toml"
    config.write_text(f'[search]\nvocabulary = "{vocabulary}"\n', encoding="utf-8")
    data = OUT / f"cli-data-{out.stem}"
    cmd = [sys.executable, "-m", "bot.cli", "--config", str(config), "--data-dir", str(data), "--model", model]
    cmd += ["timeline", str(audio), "--png", str(out.with_suffix(".png")), "--srt", str(out.with_suffix(".srt"))]
    if labels:
        cmd += ["--labels", labels]
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE.parent, env=env)
    return done.stdout.strip()


def charts(files: list[Path], full: str, trained: str) -> tuple[list[tuple[str, float, float]], dict[str, str]]:
    """The demo programme's charts and subtitles with both models; what plays when, and each summary."""
    chunks, spans = demo(files)
    path = encode(chunks, OUT / "demo.flac", FLAC)
    summaries = {
        "random": shira_timeline(full, path, HERE / "timeline.png"),
        "trained": shira_timeline(trained, path, HERE / "timeline-trained.png", trained_labels(), "none"),
    }
    return spans, summaries


def trained_model() -> Path:
    """The tests' trained tiny CLAP (tests/support/trained_clap.py), trained once into OUT."""
    from tests.support.trained_clap import build_trained_clap

    directory = OUT / "trained-clap"
    if not (directory / "config.json").exists():
        build_trained_clap(directory)
    return directory


def trained_labels() -> str:
    """The trained model's captions, comma-separated."""
    from tests.support.trained_clap import CLASSES

    return ", ".join(phrase for _, phrase in CLASSES.values())


# ----------------------------------------------------------------------------------------- the report


def mib(n: float) -> str:
    """Bytes as MiB."""
    return f"{n / MB:.0f} MiB"


def rss_slope(run: dict[str, Any]) -> float:
    """MiB of RSS gained per hour of audio over the run's second half (a least-squares line)."""
    points = run["rss"][len(run["rss"]) // 2 :]
    if len(points) < 2:
        return float("nan")
    seconds, rss = np.array(points, dtype=np.float64).T
    return float(np.polyfit(seconds, rss, 1)[0] * 3600 / MB)


def section(r: dict[str, Any]) -> str:
    """The RESULTS.md section for one benchmark run."""
    s, full, tiny = r["session"], r["memory_full"], r["memory_tiny"]
    ten, video = s["input"], s["video"]
    idle, loaded = Latencies(tuple(s["text_idle"])), Latencies(tuple(s["text_loaded"]))
    ratio = loaded.p95 / idle.p95
    p = r["params"]
    windows = 1 / p["hop_seconds"]
    estimate = full["peak_sampled"] + tiny["peak"] - tiny["peak_sampled"]
    decoded = s["loaded_audio_seconds"]
    during = f"it decoded {decoded:.0f} s meanwhile" if decoded else "before its first batch of 32 windows was done"
    busy = r["other_cores"] >= 0.25
    over = (
        f"Over the target, measured while other processes kept {r['other_cores']:.1f} of the 2 cores busy: how much "
        "of it a timeline causes on a quiet machine is still to be measured."
        if busy
        else f"Over the target on a quiet machine (others kept {r['other_cores']:.1f} of the 2 cores busy). A loaded "
        "query waits for the running batch's next pause point (at most ~13-16 ms apart for 8 windows on AVX512-BF16: "
        "after each clip's features, around every attention and between its clips, before each MLP half and patch "
        "merge, between the clips of each linear layer) and then shares the 2 "
        "cores with the timeline's decoder and the other half of the batch's threads; the idle p95 it is divided by "
        f"is a {idle.p95:.0f} ms query."
    )
    verdict = "Within the target." if ratio <= 2 else over
    lines = [
        MARKERS[0],
        "## Sound-event timelines",
        "",
        f"Measured with `{r['command']}` on {r['date']} in {r['minutes']:.0f} min; model: {s['model']}. "
        f"Machine: {r['machine']['CPU']}, {r['machine']['cores (os.cpu_count)']} cores shared with other engineers, "
        f"{r['machine']['RAM']} RAM, torch {r['machine']['torch']}; /proc/loadavg before: {r['loadavg_before']}, "
        f"after: {r['loadavg_after']}; other processes kept {r['other_cores']:.2f} of the 2 cores busy on average.",
        "",
        f"Windows of {p['window_seconds']:g} s every {p['hop_seconds']:g} s ({windows:g} windows per second of audio, "
        f"each a full CLAP pass: the extractor pads a window to 10 s), scored against the built-in vocabulary "
        f"({s['vocabulary']} labels); shira's default config otherwise. Inputs: real sounds from Debian's "
        "lmms-common and hydrogen-drumkits one after another with 0.2-4 s pauses, made by bench/timeline.py.",
        "",
        "| figure | target | measured |",
        "|---|---|---|",
        f"| speed, {ten['seconds_audio'] / 60:.0f}-min FLAC (44.1 kHz) | reported | "
        f"**{ten['seconds_audio'] / ten['wall']:.2f} s of audio per s** ({ten['wall']:.0f} s wall, "
        f"{ten['cpu'] / ten['wall']:.2f} cores busy; "
        f"{ten['wall'] / ten['seconds_audio'] / windows * 1000:.0f} ms per window) |",
        f"| speed, {video['seconds_audio'] / 60:.0f}-min MP4 video (H.264 + AAC) | reported | "
        f"**{video['seconds_audio'] / video['wall']:.2f} s of audio per s** ({video['wall']:.0f} s wall) |",
        f"| text query p95 while a timeline runs / idle p95 | <= 2 | loaded p95 {loaded.p95:.1f} ms vs idle p95 "
        f"{idle.p95:.1f} ms = **{ratio:.2f}x** (n={len(idle.samples)} and {len(loaded.samples)}; p50 "
        f"{idle.p50:.1f} vs {loaded.p50:.1f} ms) |",
        f"| peak RSS, 1-hour input, the tests' trained tiny CLAP, whole hour | reported | **{mib(tiny['peak'])}** "
        f"(baseline {mib(tiny['baseline'])}; during the analysis, read at every batch, at most "
        f"{mib(tiny['peak_sampled'])}; {tiny['run']['wall']:.0f} s) |",
        f"| peak RSS, 1-hour input, full-size model, first {full['run']['seconds_audio'] / 60:.1f} min | reported | "
        f"**{mib(full['peak'])}** (baseline {mib(full['baseline'])}; read at every batch, between "
        f"{mib(min(m for _, m in full['run']['rss']))} and {mib(full['peak_sampled'])}) |",
        f"| peak RSS, 1-hour input, full-size model, whole hour (estimate) | reported | **{mib(estimate)}**: the "
        "full-size model's RSS during the analysis plus what the end of the hour added for the tiny model |",
        "",
        f"- Baseline: settled RSS after the engine opened, embedded the vocabulary and made a 20-s timeline. Peak: "
        "the kernel's high-water mark (VmHWM) from then on. RSS stays flat while the hour is analysed; the peak "
        f"comes at its end ({mib(tiny['peak'] - tiny['peak_sampled'])} above the flat part for the tiny model), "
        "when the whole (windows x labels) score matrix is calibrated, filtered and drawn: float64 copies of "
        f"{7200 * s['vocabulary'] * 8 / MB:.0f} MiB each for an hour against the {s['vocabulary']}-label vocabulary, "
        "so that part grows with the length and with the number of labels.",
        f"- The 1-hour input is a {r['hour_bytes'] / MB:.0f} MiB WAV (16 kHz mono 16-bit; decoding resamples to "
        "48 kHz). The door reads the whole file into memory before analysing it, so its bytes are part of both "
        "peaks; the decoded audio is not (ffmpeg streams 30 s chunks, in a child process outside these figures).",
        f"- Why the full-size figure is bounded: at the speed above the whole hour would take about "
        f"{3600 / (ten['seconds_audio'] / ten['wall']) / 60:.0f} min on this shared machine. What grows with the "
        "length is only each window's 512-d vector (7,200 per hour: 14 MiB) and, at the end, the score matrix "
        "(windows x labels), the chart and the subtitles; the tiny model's run covers all of that for the whole "
        f"hour ({tiny['run']['seconds_audio'] / 60:.0f} min analysed, RSS trend {rss_slope(tiny['run']):+.0f} MiB "
        "per hour over its second half; its extractor pads a window to 2 s, not 10, so an hour takes it minutes). "
        "Everything else (a 30 s chunk, one batch of 32 windows, the model's working memory) is the same at "
        "minute 3 as at minute 60. Minutes analysed count decoded audio, which leads the embedded windows by at "
        "most one 30 s chunk.",
        f"- The speed is the machine's share: other processes kept {r['other_cores']:.2f} of the 2 cores busy "
        f"and the analysis got {ten['cpu'] / ten['wall']:.2f}. Per window it spent "
        f"{ten['cpu'] / ten['seconds_audio'] / windows * 1000:.0f} CPU-ms; the optimisations table above has "
        "142 ms of wall time per window with the same defaults on the quiet machine, which would make about "
        f"{1 / (windows * 0.142):.1f} s of audio per second.",
        f"- At this speed a recording of `max_seconds` = {r['max_seconds'] / 3600:g} h takes about "
        f"{r['max_seconds'] / (ten['seconds_audio'] / ten['wall']) / 60:.0f} min; the door's deadline for a "
        f"timeline (`[timeline] deadline_seconds`) is {r['deadline_seconds'] / 60:.0f} min.",
        "- Text queries are bench.interactive's: a warm 10k synthetic library, every query new, 50 ms apart; the "
        "loaded ones start 2 s after a timeline of the 10-minute file does, and it is stopped after them "
        f"({during}). {verdict}",
        "",
        "### The chart for one recording",
        "",
        f"A {r['demo_spans'][-1][2] + DEMO_PAUSE:.0f}-second programme of real sounds, each followed by "
        f"{DEMO_PAUSE:g} s of silence: "
        + "; ".join(f"{name} {a:.0f}-{b:.0f} s" for name, a, b in r["demo_spans"])
        + ". Made with `shira timeline demo.flac --png ... --srt ...`.",
        "",
        f"With the tests' trained tiny CLAP (labels: {trained_labels()}): "
        "[timeline-trained.srt](timeline-trained.srt). It was trained on synthesised tones, noises, clicks, chirps "
        "and silence only, so it can tell silence from sound and roughly what kind of sound, no more.",
        "",
        "![timeline, trained tiny CLAP](timeline-trained.png)",
        "",
        "With the random-weight full-size model (built-in vocabulary; its labels mean nothing): "
        "[timeline.srt](timeline.srt).",
        "",
        "![timeline, random full-size model](timeline.png)",
        "",
        f"- No real CLAP checkpoint is available offline: {r['checkpoints']}",
        MARKERS[1],
    ]
    return "\n".join(lines)


CHECKPOINTS = (
    "no ~/.cache/huggingface; no *.safetensors, *.ckpt or *.pt CLAP files on the machine; on PyPI, msclap 1.3.4 "
    "and laion-clap 1.1.7 ship code only and download their weights at run time (msclap: hf_hub_download; "
    "laion-clap: its hub URL), amclap 0.1.0 ships training code, and clapback-embed 0.1.0 ships an ONNX runner "
    "without the ONNX files."
)


def measure(quick: bool, model: str | None, minutes: float) -> dict[str, Any]:
    """Make the recordings, run each measurement in a fresh process, and make the charts."""
    from core.config import load_config

    began = time.monotonic()
    before = Path("/proc/loadavg").read_text().strip()
    other = machine.OtherLoad()
    files = sound_files()
    log.info("%d real sounds", len(files))
    ten = recording(files, "programme-2min.flac" if quick else "programme-10min.flac", 120 if quick else 600, FLAC)
    video = recording(files, "programme-1min.mp4" if quick else "programme-3min.mp4", 60 if quick else 180, MP4, True)
    hour = recording(files, "programme-60min.wav", 3600, WAV_16K)
    warm = recording(files, "warm-20s.flac", 20, FLAC)
    model_key = ("full" if model is None else "custom") + ("-quick" if quick else "")
    full = "full" if model is None else model
    common = {"warm": str(warm), "model": full, "model_key": model_key}
    session = run_child(
        common
        | {"kind": "session", "input": str(ten), "video": str(video), "queries": 40 if quick else 100}
        | {"library": 2000 if quick else 10_000}
    )
    # Memory only from here on, so the runs may share the cores.
    trained = str(trained_model())
    with ThreadPoolExecutor(3) as pool:
        tiny = pool.submit(
            run_child, common | {"kind": "memory", "input": str(hour), "model": trained, "model_key": "trained"}
        )
        memory_full = run_child(common | {"kind": "memory", "input": str(hour), "bound": minutes * 60})
        spans, summaries = charts(files, resolve_model(full, OUT / "scratch")[0], trained)
        memory_tiny = tiny.result()
    config = load_config(None, environ={})
    return {
        "command": "python -m bench.timeline" + (" --quick" if quick else "") + (f" --model {model}" if model else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "minutes": (time.monotonic() - began) / 60,
        "machine": machine.describe(),
        "loadavg_before": before,
        "loadavg_after": Path("/proc/loadavg").read_text().strip(),
        "other_cores": other.cores(),
        "params": {"window_seconds": config.timeline.window_seconds, "hop_seconds": config.timeline.hop_seconds},
        "max_seconds": config.timeline.max_seconds,
        "deadline_seconds": config.timeline.deadline_seconds,
        "hour_bytes": hour.stat().st_size,
        "session": session,
        "memory_full": memory_full,
        "memory_tiny": memory_tiny,
        "full_model": full,
        "demo_spans": spans,
        "summaries": summaries,
        "checkpoints": CHECKPOINTS,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print one JSON object, and write the timeline section of RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-minute recording, 1 minute of the hour, 40 queries")
    parser.add_argument("--model", help="a model directory instead of the random full-size CLAP")
    parser.add_argument("--minutes", type=float, help="minutes of the hour the full-size model analyses (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--report", action="store_true", help="only rewrite the section from the last run's figures")
    parser.add_argument("--charts", action="store_true", help="only remake the charts, then rewrite the section")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from bot.malloc import return_large_buffers

    return_large_buffers()  # as `shira` sets itself up
    if args.child:
        print(json.dumps(kept_child(json.loads(args.child))), flush=True)
        return 0
    if args.report or args.charts:  # the last run's figures, from bench/out/timeline/result.json
        result = json.loads((OUT / "result.json").read_text(encoding="utf-8"))
        if args.charts:
            trained, full = str(trained_model()), resolve_model(result.get("full_model", "full"), OUT / "scratch")[0]
            result["demo_spans"], result["summaries"] = charts(sound_files(), full, trained)
    else:
        minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 3.0)
        result = measure(args.quick, args.model, minutes)
    (OUT / "result.json").write_text(json.dumps(result, default=str), encoding="utf-8")
    body = section(result)
    print(json.dumps(result, default=str))
    print(body)
    if not args.no_write:
        write_section(body, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
