"""Cluster mode's cost: added latency per request over the embedded queue, and bulk throughput with 1 and 2 workers.

`python -m bench.cluster` starts redis-server (Debian's, on loopback, no persistence) and `shira worker`
processes, prints one JSON line and writes its section of bench/RESULTS.md. Latency uses the tests' tiny random
CLAP so that what is measured is the queue, not the model; throughput uses the random-weight full-size
architecture (bench/model.py) unless --quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.sections import write_section
from core.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "RESULTS.md"
START, END = "<!-- cluster:start -->", "<!-- cluster:end -->"
TARGET_P50_MS = 5.0


def _config(data: Path, model: str, redis_url: str = "", threads: int = 0) -> Config:
    """The bench's config: fp32 on the given model, [cluster] on redis_url if given."""
    env = {"SHIRA_DATA_DIR": str(data), "SHIRA_MODEL": model} | ({"SHIRA_REDIS_URL": redis_url} if redis_url else {})
    config = load_config(None, environ=env)
    import dataclasses

    model_config = dataclasses.replace(config.model, precision="fp32", threads=threads)
    cluster = dataclasses.replace(config.cluster, heartbeat_seconds=0.5, worker_max_jobs=32)
    return dataclasses.replace(config, model=model_config, cluster=cluster)


def _toml(config: Config, path: Path) -> Path:
    lines = [
        f"data_dir = {json.dumps(str(config.data_dir))}",
        'log_level = "WARNING"',
        "[model]",
        f"id = {json.dumps(config.model.id)}",
        'precision = "fp32"',
        f"threads = {config.model.threads}",
        "[cluster]",
        f"redis_url = {json.dumps(config.cluster.redis_url)}",
        f"key_prefix = {json.dumps(config.cluster.key_prefix)}",
        f"heartbeat_seconds = {config.cluster.heartbeat_seconds}",
        f"worker_max_jobs = {config.cluster.worker_max_jobs}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _workers(toml: Path, n: int, log: Path) -> list[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    procs = []
    with log.open("ab") as out:
        for _ in range(n):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bot",
                    "worker",
                    "--config",
                    str(toml),
                    cwd=ROOT,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )  # fmt: skip
            )
    return procs


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*(asyncio.wait_for(p.wait(), 60) for p in procs), return_exceptions=True)


async def _until_workers(jobs: Any, n: int, timeout: float = 300.0) -> None:
    from core.streams import live_workers

    deadline = time.monotonic() + timeout
    while len(await live_workers(jobs.client, jobs.keys, jobs.cluster.heartbeat_seconds)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not register in {timeout:.0f} s")
        await asyncio.sleep(0.2)


def _pcts(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}


async def _latency(queue: Any, n: int) -> list[float]:
    """One text at a time (each a new text, as the encoder caches none of them here)."""
    times = []
    for i in range(n + 10):
        started = time.perf_counter()
        await queue.embed_texts([f"a short query number {i}"])
        if i >= 10:  # warm-up
            times.append(time.perf_counter() - started)
    return times


async def overhead(tmp: Path, redis_url: str, model: str, n: int) -> dict[str, Any]:
    """p50/p95 of one text embedding: the embedded JobQueue, then StreamJobs with one `shira worker` process."""
    from core.embedder import Embedder
    from core.jobs import JobQueue
    from core.streams import StreamJobs

    config = _config(tmp / "data", model, redis_url, threads=1)
    queue = JobQueue(Embedder.load(config.model), 256, 16, 8)
    queue.start()
    embedded = await _latency(queue, n)
    await queue.stop()
    procs = await _workers(_toml(config, tmp / "latency.toml"), 1, tmp / "workers.log")
    jobs = await StreamJobs.connect(config)
    jobs.start()
    try:
        await _until_workers(jobs, 1)
        cluster = await _latency(jobs, n)
    finally:
        await jobs.stop()
        await _stop(procs)
    e, c = _pcts(embedded), _pcts(cluster)
    return {
        "requests": n,
        "embedded": e,
        "cluster": c,
        "added_p50_ms": c["p50_ms"] - e["p50_ms"],
        "added_p95_ms": c["p95_ms"] - e["p95_ms"],
    }


async def throughput(tmp: Path, redis_url: str, model: str, windows: int, workers: int) -> dict[str, Any]:
    """Bulk windows per second through `workers` worker processes of one torch thread each."""
    from core.jobs import Priority
    from core.streams import StreamJobs

    config = _config(tmp / "data", model, redis_url, threads=1)
    procs = await _workers(_toml(config, tmp / f"bulk{workers}.toml"), workers, tmp / "workers.log")
    jobs = await StreamJobs.connect(config)
    jobs.start()
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(480_000)).astype(np.float32) for _ in range(8)]
    try:
        await _until_workers(jobs, workers)
        await jobs.embed_clips(clips[:2], Priority.BULK, wait=True)  # warm each path once
        groups = [clips[: config.model.batch_size]] * max(1, windows // config.model.batch_size)
        started = time.perf_counter()
        await asyncio.gather(*(jobs.embed_clips(g, Priority.BULK, wait=True) for g in groups))
        seconds = time.perf_counter() - started
    finally:
        await jobs.stop()
        await _stop(procs)
    done = sum(len(g) for g in groups)
    return {"workers": workers, "windows": done, "seconds": seconds, "windows_per_s": done / seconds}


def section(result: dict[str, Any]) -> str:
    """The RESULTS.md section."""
    o = result["overhead"]
    ok = o["added_p50_ms"] <= TARGET_P50_MS
    lines = [
        START,
        "## Cluster mode: Redis Streams queue",
        "",
        f"Machine: {result['machine']}. redis-server {result['redis']} on loopback; workers are `shira worker` "
        "processes with one torch thread each.",
        "",
        "| measure | target | result |",
        "|---|---|---|",
        f"| added latency per request (one text at a time, tiny model, {o['requests']} requests) | p50 <= 5 ms | "
        f"p50 **{o['added_p50_ms']:.2f} ms**, p95 {o['added_p95_ms']:.2f} ms "
        f"(embedded p50 {o['embedded']['p50_ms']:.2f} ms, cluster p50 {o['cluster']['p50_ms']:.2f} ms) | "
        f"{'**met**' if ok else 'missed'} |",
    ]
    for t in result["throughput"]:
        lines.append(
            f"| bulk throughput, {t['workers']} worker{'s' if t['workers'] > 1 else ''} ({result['bulk_model']}) | "
            f"reported | **{t['windows_per_s']:.2f} windows/s** "
            f"({t['windows']} x 10 s windows in {t['seconds']:.1f} s) | reported |"
        )
    lines += [
        "",
        f"- Measured with `{result['command']}` in {result['seconds']:.0f} s; other processes kept "
        f"{result['other_cores']:.1f} of the machine's cores busy meanwhile, so throughput with 2 workers is bounded "
        "by the cores left, not by the queue.",
        "- Added latency: the same texts through the in-process JobQueue and through StreamJobs -> Redis -> a worker "
        "process -> the frontend's reply stream; the difference is the queue's cost (two XADDs, a blocking "
        "XREADGROUP and XREAD, XACK+XDEL, and packing the vectors).",
        END,
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.machine import OtherLoad, _cpuinfo, ram_gib
    from tests.support.redis_server import running_redis
    from tests.support.tiny_clap import build_tiny_clap

    started = time.perf_counter()
    watch = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="shira-cluster-") as name:
        tmp = Path(name)
        tiny = str(build_tiny_clap(tmp / "tiny"))
        with running_redis(tmp) as server:
            result: dict[str, Any] = {"overhead": await overhead(tmp, server.url, tiny, args.requests)}
            if args.quick:
                bulk_model, label = tiny, "tests' tiny random CLAP"
            else:
                from bench.model import resolve

                bulk_model, label = resolve(args.model)
            result["bulk_model"] = label
            result["throughput"] = [await throughput(tmp, server.url, bulk_model, args.windows, n) for n in (1, 2)]
            import subprocess

            version = subprocess.run([server_exe(), "--version"], capture_output=True, text=True).stdout.split()
            result["redis"] = next((v.split("=")[1] for v in version if v.startswith("v=")), "?")
    result["machine"] = f"{_cpuinfo()[0]}, {os.cpu_count()} cores, {ram_gib():.0f} GiB"
    result["other_cores"] = watch.cores()
    result["seconds"] = time.perf_counter() - started
    result["command"] = "python -m bench.cluster" + (" --quick" if args.quick else "")
    return result


def server_exe() -> str:
    """The redis-server binary."""
    from tests.support.redis_server import redis_exe

    return redis_exe()


def main(argv: list[str] | None = None) -> int:
    """Measure, print one JSON line, and write the RESULTS.md section."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="texts for the latency measurement")
    parser.add_argument("--windows", type=int, default=32, help="10 s windows for each throughput run")
    parser.add_argument("--quick", action="store_true", help="throughput on the tiny model (queue only)")
    parser.add_argument("--model", help="model for throughput (default: the random full-size architecture)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    result = asyncio.run(run(args))
    print(json.dumps(result))
    if not args.no_write:
        write_section(section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
