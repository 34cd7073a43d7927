"""`shira worker` as real processes on a real redis-server: SIGKILL mid-batch, takeover, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from core.config import Config
from core.jobs import JobQueue, Priority
from core.streams import GROUP, Keys, StreamJobs, connect_redis
from tests.support import redis_server as servers
from tests.support.redis_server import RedisServer
from tests.support.sounds import tone
from tests.test_streams import assert_same, cluster_config, stream_length, until

redis_server = servers.redis_server  # the session's redis-server fixture
ROOT = Path(__file__).resolve().parents[1]


def write_toml(config: Config, path: Path) -> Path:
    """The config a worker process reads: the tiny model and the test's [cluster] section."""
    cluster = config.cluster
    lines = [f"data_dir = {json.dumps(str(config.data_dir))}", "[model]", f"id = {json.dumps(config.model.id)}"]
    lines += ['precision = "fp32"', f"batch_size = {config.model.batch_size}", "[cluster]"]
    for key in ("redis_url", "key_prefix", "heartbeat_seconds", "claim_idle_seconds", "worker_max_jobs"):
        lines.append(f"{key} = {json.dumps(getattr(cluster, key))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def start_worker(toml: Path, log: Path, crash_at: str = "") -> asyncio.subprocess.Process:
    """`python -m bot worker --config toml` (the `shira worker` script's code), output to log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if crash_at:
        env["SHIRA_CRASH_AT"] = crash_at
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "worker", "--config", str(toml),
            cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip


async def wait_exit(proc: asyncio.subprocess.Process, log: Path, timeout: float = 120.0) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"worker did not exit:\n{log.read_text(errors='replace')}") from None


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("crash_at", ["worker-embedded:3", "worker-answered:2"])
async def test_a_worker_killed_mid_batch_has_its_jobs_taken_over_and_each_answered_once(
    tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer, crash_at: str
) -> None:
    from core.embedder import Embedder

    config = cluster_config(
        tmp_path, tiny_model_dir, redis_server, worker_max_jobs=4, heartbeat_seconds=0.3, claim_idle_seconds=1.5
    )
    toml, log = write_toml(config, tmp_path / "worker.toml"), tmp_path / "workers.log"
    clips = [tone(0.5, freq=200 + 40 * i) for i in range(12)]
    jobs = await StreamJobs.connect(config)
    jobs.start()
    client = await connect_redis(config.cluster)
    keys = Keys(config.cluster.key_prefix)
    try:
        answers = [asyncio.create_task(jobs.embed_clips([clip], Priority.BULK, wait=True)) for clip in clips]
        await until(lambda: _has(config, 12))
        doomed = await start_worker(toml, log, crash_at)
        assert await wait_exit(doomed, log) == -signal.SIGKILL, log.read_text(errors="replace")
        assert "crash point" in log.read_text(errors="replace")
        unanswered = sum(not task.done() for task in answers)
        assert unanswered > 0  # the killed worker held jobs it never finished
        survivor = await start_worker(toml, log)
        try:
            results = await asyncio.wait_for(asyncio.gather(*answers), 120)
        finally:
            survivor.send_signal(signal.SIGTERM)
        assert await wait_exit(survivor, log) == 0, log.read_text(errors="replace")
        queue = JobQueue(Embedder.load(config.model), 64, config.queue.max_batch, config.model.batch_size)
        queue.start()
        try:
            for clip, result in zip(clips, results, strict=True):  # each caller got its own clip's vector
                assert_same(result, await queue.embed_clips([clip], Priority.BULK))
        finally:
            await queue.stop()
        assert await stream_length(config, Priority.BULK) == 0
        pending = await client.xpending(keys.stream(Priority.BULK), GROUP)
        assert pending["pending"] == 0  # every job acknowledged, the killed worker's too
        assert await client.zcard(keys.workers) == 1  # the survivor left on SIGTERM; the killed one never beats again
        assert "took over" in log.read_text(errors="replace")
    finally:
        await jobs.stop()
        await client.aclose()


async def _has(config: Config, n: int) -> bool:
    return await stream_length(config, Priority.BULK) >= n


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_shira_worker_names_an_unreachable_redis_and_exits(tmp_path: Path, tiny_model_dir: Path) -> None:
    import subprocess

    from tests.support.redis_server import _free_port

    toml = tmp_path / "worker.toml"
    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    toml.write_text(f'[model]\nid = {json.dumps(str(tiny_model_dir))}\n[cluster]\nredis_url = "{url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "worker", "--config", str(toml)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "can't reach Redis at redis://:***@127.0.0.1:" in done.stderr and "hunter2" not in done.stderr
