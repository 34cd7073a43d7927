"""Bulk indexing: shira's importer against the naive per-file loop that published CLAP demos use."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from core.audio import SAMPLE_RATE, Limits, decode
from core.config import Config, ModelConfig, load_config
from core.embedder import normalize, windows

log = logging.getLogger(__name__)

LIMITS = Limits(max_bytes=50 * 2**20, max_seconds=600.0, timeout=60.0)
SPACE = "bench"


def bench_config(data_dir: Path, model: str, **model_fields: object) -> Config:
    """shira's defaults on a scratch data dir, with limits that a benchmark must not trip over."""
    config = load_config(None, environ={})
    limits = dataclasses.replace(config.limits, requests_per_minute=0, space_quota=0)
    model_config = dataclasses.replace(ModelConfig(id=model), **model_fields)  # type: ignore[arg-type]
    return dataclasses.replace(config, data_dir=data_dir, model=model_config, limits=limits)


@dataclass(frozen=True)
class BulkResult:
    """Both sides of the bulk-indexing comparison."""

    files: int
    rounds: int
    windows: int
    seconds_audio: float
    baseline_seconds: float
    shira_seconds: float
    baseline_cpu: float
    shira_cpu: float
    label_warmup_seconds: float
    cosine_min: float
    cosine_mean: float
    failed: int

    @property
    def baseline_fps(self) -> float:
        """Baseline files per second."""
        return self.files / self.baseline_seconds

    @property
    def shira_fps(self) -> float:
        """shira files per second."""
        return self.files / self.shira_seconds

    @property
    def speedup(self) -> float:
        """shira over baseline, wall clock."""
        return self.shira_fps / self.baseline_fps

    @property
    def cpu_speedup(self) -> float:
        """shira over baseline in CPU seconds per file (this process and its ffmpeg children)."""
        return self.baseline_cpu / self.shira_cpu


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class NaiveBaseline:
    """Per file: decode, ClapProcessor, fp32 get_audio_features, one file at a time (10 s windows as shira)."""

    def __init__(self, model: str) -> None:
        from transformers import ClapModel, ClapProcessor

        self.model = ClapModel.from_pretrained(model).eval()
        self.processor = ClapProcessor.from_pretrained(model)
        self.windows = 0
        self.seconds = 0.0

    def embed(self, path: Path) -> np.ndarray:
        """One file's vector: the normalised mean of its windows."""
        import torch

        samples = decode(path.read_bytes(), LIMITS).samples
        clips = [samples[w.start : w.end] for w in windows(len(samples), 10.0, 10.0)]
        inputs = self.processor(audio=clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_audio_features(input_features=inputs["input_features"])
        self.windows += len(clips)
        self.seconds += len(samples) / SAMPLE_RATE
        return normalize(normalize(getattr(out, "pooler_output", out).numpy()).mean(axis=0))


def _serve_baseline(model: str, conn: Connection) -> None:
    """The child process's side of BaselineProcess: a path in, (vector, windows, seconds, CPU seconds) out."""
    baseline = NaiveBaseline(model)
    while (path := conn.recv()) is not None:
        vector = baseline.embed(Path(path))
        conn.send((vector, baseline.windows, baseline.seconds, cpu_seconds()))


class BaselineProcess:
    """NaiveBaseline in a process of its own, as a user's loop would be. In one process with shira, each side's
    OpenMP team slows the other: while libgomp manages more threads than cores it cuts every spin-wait short."""

    def __init__(self, model: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_baseline, args=(model, child), daemon=True)
        self._process.start()
        child.close()
        self.windows, self.seconds, self.cpu = 0, 0.0, 0.0  # cpu: the child's CPU seconds, with its ffmpeg

    def embed(self, path: Path) -> np.ndarray:
        """One file's vector, from the child."""
        self._conn.send(str(path))
        vector, self.windows, self.seconds, self.cpu = self._conn.recv()
        return np.asarray(vector)

    def close(self) -> None:
        """Stop the child (if it is still there to ask)."""
        with contextlib.suppress(OSError):  # it already died: the error that ended the benchmark says why
            self._conn.send(None)
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def rounds_of(files: list[Path], rounds: int) -> list[list[Path]]:
    """Consecutive chunks, so baseline and shira alternate and share whatever load the machine has."""
    size = -(-len(files) // rounds)
    return [files[i : i + size] for i in range(0, len(files), size)]


async def bulk_indexing(model: str, files: list[Path], work: Path, rounds: int) -> BulkResult:
    """Alternate the naive baseline and shira's importer over the same files; compare speed and vectors."""
    baseline = BaselineProcess(model)
    try:
        return await _alternate(baseline, model, files, work, rounds)
    finally:
        baseline.close()


async def _alternate(baseline: BaselineProcess, model: str, files: list[Path], work: Path, rounds: int) -> BulkResult:
    """bulk_indexing's rounds, with the baseline already running."""
    from bot.importer import import_paths
    from core.engine import Engine

    baseline.embed(files[0])  # warm-up, not timed
    windows_before, seconds_before = baseline.windows, baseline.seconds
    reference: dict[Path, np.ndarray] = {}
    times = {"baseline": 0.0, "shira": 0.0}
    cpu = {"baseline": 0.0, "shira": 0.0}
    failed = 0
    async with Engine.open(bench_config(work / "bulk", model)) as engine:
        assert engine.encoder.labeler is not None
        start = time.perf_counter()
        await engine.encoder.labeler.warm()
        warm = time.perf_counter() - start
        for n, chunk in enumerate(rounds_of(files, rounds), start=1):
            start, used = time.perf_counter(), baseline.cpu
            for path in chunk:
                reference[path] = baseline.embed(path)
            times["baseline"] += time.perf_counter() - start
            cpu["baseline"] += baseline.cpu - used
            start, used = time.perf_counter(), cpu_seconds()
            report = await import_paths(engine, chunk, SPACE)
            times["shira"] += time.perf_counter() - start
            cpu["shira"] += cpu_seconds() - used
            failed += len(report.failed)
            log.info("round %d/%d: baseline %.1f s, shira %.1f s so far", n, rounds, times["baseline"], times["shira"])
        cosines = []
        for path in files:
            sample_id = await engine.store.find_by_sha(SPACE, hashlib.sha256(path.read_bytes()).hexdigest())
            if sample_id is not None:
                vector = (await engine.store.sample_vectors([sample_id]))[sample_id]
                cosines.append(float(np.dot(vector, reference[path])))
    return BulkResult(
        files=len(files),
        rounds=rounds,
        windows=baseline.windows - windows_before,
        seconds_audio=baseline.seconds - seconds_before,
        baseline_seconds=times["baseline"],
        shira_seconds=times["shira"],
        baseline_cpu=cpu["baseline"],
        shira_cpu=cpu["shira"],
        label_warmup_seconds=warm,
        cosine_min=min(cosines) if cosines else float("nan"),
        cosine_mean=float(np.mean(cosines)) if cosines else float("nan"),
        failed=failed,
    )
