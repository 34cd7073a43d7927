"""Interactive latency through the core API: text queries, voice-note lookups, and text queries under bulk load."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.indexing import LIMITS, bench_config
from bench.scale import clustered
from core.audio import SAMPLE_RATE, decode, ffmpeg_exe
from core.fingerprint import Fingerprint, to_blob
from core.messages import AudioRef, Command, ReplyKind, Request
from core.store import NewSample, SqliteStore

log = logging.getLogger(__name__)

LIBRARY = "library"
BULK_SPACE = "bulk"
SIZE = 10_000

SOUNDS = "kick snare hat hihat tom crash ride clap rim cowbell shaker tambourine conga bongo cymbal bell".split()
QUALITIES = (
    "dry wet bright dark tight loose deep soft hard open closed short long vintage acoustic electronic room "
    "distorted punchy warm"
).split()


def query_texts() -> list[str]:
    """Distinct text queries (so the text-embedding cache never answers them), in a shuffled but fixed order."""
    texts = [f"{a} {b} {s}" for a, b in itertools.permutations(QUALITIES, 2) for s in SOUNDS]
    order = np.random.default_rng(1).permutation(len(texts))
    return [texts[i] for i in order]


NO_PRINT = to_blob(Fingerprint(np.zeros(0, np.uint32), np.zeros(0, np.uint32)))


async def build_library(data_dir: Path, dim: int, n: int = SIZE) -> None:
    """n samples with clustered synthetic vectors, names, descriptions and tags, straight into the store."""
    store = await SqliteStore.open(data_dir / "shira.db")
    try:
        if await store.count(LIBRARY) >= n:
            return
        vectors, _ = clustered(n, seed=7)
        if dim != vectors.shape[1]:
            raise SystemExit(f"the model's dimension is {dim}; the synthetic library is {vectors.shape[1]}-d")
        rng = np.random.default_rng(7)
        for i, vector in enumerate(vectors):
            sound, a, b = SOUNDS[i % len(SOUNDS)], *rng.choice(QUALITIES, 2, replace=False)
            await store.add_sample(
                NewSample(
                    space=LIBRARY,
                    sha256=f"{i:064x}",
                    ext=".wav",
                    name=f"{a}_{sound}_{i:05d}.wav",
                    uploader="bench",
                    description=f"a {a} {b} {sound}",
                    duration=float(rng.uniform(0.2, 8.0)),
                    source="synthetic",
                    vector=vector,
                    segments=((0.0, 1.0, vector),),
                    tags=((sound, None, False), (a, 0.5, True)),
                    fingerprint=NO_PRINT,  # no original file behind these rows: nothing for a backfill to do
                )
            )
    finally:
        await store.close()


def voice_notes(files: list[Path], count: int, work: Path) -> list[bytes]:
    """5 s OGG/Opus clips made of corpus drum hits with a little noise, each different."""
    rng = np.random.default_rng(3)
    notes = []
    for n in range(count):
        out = np.zeros(5 * SAMPLE_RATE, np.float32)
        at = 0
        for path in rng.choice(files, 6):
            hit = decode(path.read_bytes(), LIMITS).samples[:SAMPLE_RATE]
            end = min(len(out), at + len(hit))
            out[at:end] += hit[: end - at]
            at += int(rng.uniform(0.5, 0.9) * SAMPLE_RATE)
            if at >= len(out):
                break
        out += rng.standard_normal(len(out)).astype(np.float32) * 0.003
        path = work / f"voice-{n}.ogg"
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE)]
        cmd += ["-ac", "1", "-i", "pipe:0", "-c:a", "libopus", "-b:a", "32k", "-f", "ogg", str(path)]
        subprocess.run(cmd, input=np.clip(out, -1, 1).tobytes(), check=True, capture_output=True)
        notes.append(path.read_bytes())
    return notes


def percentile(values: list[float], q: float) -> float:
    """q-th percentile in milliseconds."""
    return float(np.percentile(np.array(values), q) * 1000) if values else float("nan")


@dataclass(frozen=True)
class Latencies:
    """Samples of one latency figure, in seconds."""

    samples: tuple[float, ...]

    @property
    def p50(self) -> float:
        """Median, ms."""
        return percentile(list(self.samples), 50)

    @property
    def p95(self) -> float:
        """95th percentile, ms."""
        return percentile(list(self.samples), 95)


@dataclass(frozen=True)
class InteractiveResult:
    """Every interactive figure from one engine session."""

    text_idle: Latencies
    text_cached: Latencies
    text_embed: Latencies
    voice: Latencies
    text_loaded: Latencies
    bulk_files_during_load: int
    bulk_seconds: float
    queue_mean_batch: float
    voice_stages_ms: dict[str, float]  # p50 of each stage of a voice-note lookup, timed one after another


async def timed(coro: object) -> float:
    """Seconds one awaitable takes."""
    start = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - start


async def text_queries(engine: object, texts: list[str], gap: float) -> list[float]:
    """Time engine.search_text for each text, one after another with a pause between."""
    out = []
    for text in texts:
        out.append(await timed(engine.searcher.search_text((LIBRARY,), text, 5)))  # type: ignore[attr-defined]
        await asyncio.sleep(gap)
    return out


async def interactive(
    model: str, dim: int, files: list[Path], work: Path, n_text: int, n_voice: int
) -> InteractiveResult:
    """Text and voice latency on a warm 10k library, then text latency while a bulk import runs."""
    from bot.importer import import_paths
    from core.engine import Engine

    data = work / "library"
    log.info("building the %d-sample synthetic library", SIZE)
    await build_library(data, dim)
    notes = voice_notes(files, n_voice + 2, work)
    texts = iter(query_texts())
    config = bench_config(data, model)
    async with Engine.open(config) as engine:
        assert engine.encoder.labeler is not None and engine.encoder.queue is not None
        await engine.encoder.labeler.warm()
        if engine.encoder.text_first is not None:  # texts are served while torch loads: "warm" is after that
            await asyncio.to_thread(engine.encoder.text_first.settle, 300)
        await text_queries(engine, [next(texts) for _ in range(5)], 0.0)  # warm the model, index and database
        log.info("text queries, idle")
        idle = await text_queries(engine, [next(texts) for _ in range(n_text)], 0.05)
        repeat = "dry kick"
        await engine.searcher.search_text((LIBRARY,), repeat, 5)
        cached = [await timed(engine.searcher.search_text((LIBRARY,), repeat, 5)) for _ in range(20)]
        embed_only = [await timed(engine.encoder.queue.embed_texts([next(texts)])) for _ in range(20)]
        log.info("voice-note lookups")
        voice = []
        for i, note in enumerate(notes):
            request = Request(
                platform="bench",
                space=LIBRARY,
                user="bench",
                command=Command.IDENTIFY,
                audio=(AudioRef(f"voice-{i}.ogg", _fetcher(note), size=len(note), duration=5.0),),
            )
            start = time.perf_counter()
            reply = await engine.handle(request)
            took = time.perf_counter() - start
            if reply.kind != ReplyKind.IDENTIFY:
                raise RuntimeError(f"voice-note lookup failed: {reply.text}")
            if i >= 2:  # the first two warm the audio path
                voice.append(took)
        stages = await voice_stages(engine, notes[2:])
        log.info("text queries under a bulk import of %d files", len(files))
        bulk = asyncio.create_task(import_paths(engine, files, BULK_SPACE))
        start = time.perf_counter()
        await asyncio.sleep(1.0)  # let the import fill the queue
        loaded: list[float] = []
        while not bulk.done() and len(loaded) < n_text:
            loaded += await text_queries(engine, [next(texts)], 0.05)
        report = await bulk
        bulk_seconds = time.perf_counter() - start
        stats = engine.encoder.queue.stats()
    return InteractiveResult(
        text_idle=Latencies(tuple(idle)),
        text_cached=Latencies(tuple(cached)),
        text_embed=Latencies(tuple(embed_only)),
        voice=Latencies(tuple(voice)),
        text_loaded=Latencies(tuple(loaded)),
        bulk_files_during_load=report.added + report.duplicates,
        bulk_seconds=bulk_seconds,
        queue_mean_batch=stats.mean_batch,
        voice_stages_ms=stages,
    )


async def voice_stages(engine: Any, notes: list[bytes]) -> dict[str, float]:
    """Where a voice-note lookup's time goes: each stage of Commands._on_identify alone, p50 over the notes."""
    from core.jobs import Priority

    times: dict[str, list[float]] = {"decode": [], "embed": [], "labels": [], "fingerprint match": [], "search": []}
    for note in notes:
        start = time.perf_counter()
        audio = await engine.encoder.decode(note, engine.encoder.query_limits)
        times["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        vector = (await engine.encoder.embed_audio(audio, Priority.INTERACTIVE)).vector
        times["embed"].append(time.perf_counter() - start)
        times["labels"].append(await timed(engine.encoder.labels(vector, [], 5)))
        times["fingerprint match"].append(await timed(engine.searcher.exact((LIBRARY,), audio.samples)))
        times["search"].append(await timed(engine.searcher.search_vector((LIBRARY,), vector, "", 5, 0, "bench")))
    return {name: percentile(values, 50) for name, values in times.items()}


def _fetcher(data: bytes):  # noqa: ANN202
    async def fetch() -> bytes:
        return data

    return fetch
