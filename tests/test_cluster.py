"""Issue 13's cluster, all real processes: PostgreSQL, Redis, two `shira worker`s, two Discord shards as two
`shira run` frontends, and `shira index` importing while users search; one worker SIGKILLed mid-batch, one
frontend SIGKILLed with an acknowledged request in flight.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.engine import open_store
from core.jobs import Priority
from core.streams import Keys
from tests.conftest import make_config
from tests.fakes.discord_api import FakeDiscord, user_payload
from tests.support import redis_server as servers
from tests.support.process import RunningShira, shira_command, shira_run, write_config
from tests.support.redis_server import RedisServer
from tests.support.sounds import encode, tone
from tests.test_worker import start_worker, wait_exit

redis_server = servers.redis_server  # the session's redis-server fixture
FILES = 20
SLOW = 240.0  # generous deadlines: a loaded 2-core machine runs six processes here


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = SLOW) -> None:
    """Poll predicate until it holds, failing with what if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"never {what}"
        await asyncio.sleep(0.1)


def answer_of(fake: FakeDiscord, interaction: dict[str, Any]) -> str | None:
    """The text an interaction was finally answered with (its @original edit, or an immediate message)."""
    for call in fake.interaction_calls(interaction):
        body = call.body if isinstance(call.body, dict) else {}
        if call.method == "PATCH" and call.path.endswith("/messages/@original") and call.status == 200:
            return json.dumps(body)
        if call.path.endswith("/callback") and body.get("type") == 4:
            return json.dumps(body.get("data", {}))
    return None


def deferred(fake: FakeDiscord, interaction: dict[str, Any]) -> bool:
    """Whether Discord was told the interaction is taken on (a deferral)."""
    calls = fake.interaction_calls(interaction)
    return any(c.path.endswith("/callback") and isinstance(c.body, dict) and c.body.get("type") == 5 for c in calls)


def write_sounds(directory: Path) -> list[Path]:
    """FILES short, distinct tones as WAV files."""
    directory.mkdir()
    return [encode(tone(0.5, freq=180 + 37 * i), directory / f"tone{i:02d}.wav") for i in range(FILES)]


async def space_vectors(config: Any, space: str) -> dict[str, np.ndarray]:
    """Each stored file's vector by its sha256, read through the store API."""
    store = await open_store(config)
    try:
        ids, vectors = await store.vectors(space)
        rows = await store.get_samples([int(i) for i in ids])
        shas = [rows[int(i)].sha256 for i in ids]
        assert len(set(shas)) == len(shas), "a file stored twice"
        return dict(zip(shas, vectors, strict=True))
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_cluster_imports_while_users_search_through_a_worker_crash_and_a_frontend_restart(
    tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer, postgres_dsn: str
) -> None:
    sounds = write_sounds(tmp_path / "sounds")
    prefix = redis_server.prefix()
    cluster = {
        "postgres_dsn": postgres_dsn,
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "heartbeat_seconds": 0.5,
        "claim_idle_seconds": 3.0,
        "worker_max_jobs": 2,
    }
    async with FakeDiscord(token="cluster-test-token-42") as fake, AsyncExitStack() as stack:
        discord = fake.endpoints(shard_count=2)
        data = tmp_path / "data"  # shared by every process (the originals' file store)
        sections: dict[str, dict[str, object]] = {"cluster": cluster, "run": {"drain_seconds": 2}}
        shared = write_config(tmp_path / "cluster.toml", data, tiny_model_dir, "discord", discord, sections)
        fronts = [
            write_config(
                tmp_path / f"front{n}.toml", data, tiny_model_dir, "discord", discord | {"shard_ids": [n]}, sections
            )
            for n in (0, 1)
        ]
        env = {"SHIRA_DISCORD_TOKEN": fake.token}
        owner = (fake.guild_id >> 22) % 2  # the shard that gets the guild's events; DMs go to shard 0
        assert owner == 1, "the fake's guild must sit on shard 1, so that both frontends get traffic"
        space = f"discord:guild:{fake.guild_id}"
        workers_log = tmp_path / "workers.log"

        steady = await start_worker(shared, workers_log)
        stack.push_async_callback(_stop_worker, steady, workers_log)

        @asynccontextmanager
        async def frontend(n: int) -> AsyncIterator[RunningShira]:
            async with shira_run(fronts[n], env | {"SHIRA_FRONTEND_NAME": f"front-{n}"}) as running:
                yield running

        runs = [await stack.enter_async_context(frontend(n)) for n in (0, 1)]
        await runs[0].reaches(eventually(lambda: fake.sessions >= 2, "identified both shards"), "identified")
        kim = user_payload(fake.new_id(), "kim")

        async def search(query: str, in_guild: bool, front: RunningShira) -> str:
            interaction = fake.slash("search", kim, {"query": query}, guild=in_guild)
            await fake.dispatch("INTERACTION_CREATE", interaction)
            await front.reaches(
                eventually(lambda: answer_of(fake, interaction) is not None, f"answered /search {query}"), "answered"
            )
            text = answer_of(fake, interaction)
            assert text is not None and "went wrong" not in text.lower(), text
            return text

        await search("a warm-up", True, runs[owner])  # both frontends answer, through the workers
        await search("a warm-up", False, runs[0])

        doomed = await start_worker(shared, workers_log, crash_at="worker-embedded:3")
        await eventually(lambda: workers_log.read_text(errors="replace").count(" serving ") == 2, "two workers serving")
        importer = asyncio.create_task(
            shira_command(shared, "index", str(sounds[0].parent), "--space", space, "--json", env=env)
        )
        searched = 0
        while doomed.returncode is None or searched < 4:  # users keep searching while the import runs
            await search(f"tone {searched}", searched % 2 == 0, runs[owner] if searched % 2 == 0 else runs[0])
            searched += 1
            assert not importer.done() or doomed.returncode is not None, "the import ended before the worker crash"
            if doomed.returncode is None:
                await asyncio.sleep(0.2)
        assert await wait_exit(doomed, workers_log) == -signal.SIGKILL
        code, out, err = await asyncio.wait_for(importer, SLOW)
        assert code == 0, err
        report = json.loads(out)
        assert (report["added"], report["failed"]) == (FILES, []), report
        log = workers_log.read_text(errors="replace")
        assert "crash point worker-embedded reached" in log, log
        streams = "|".join(re.escape(Keys(prefix).stream(p)) for p in Priority)
        assert re.search(rf"took over \d+ jobs from ({streams})$", log, re.MULTILINE), log  # the other took its jobs
        assert "tone" in await search("a tone", True, runs[owner])  # the imported files are found

        code, out, err = await shira_command(shared, "stats", "--space", space, "--json", env=env)
        assert code == 0, err
        assert json.loads(out)["samples"] == FILES, (out, report)  # every file landed, once
        pooled = make_config(data, tiny_model_dir, cluster={"postgres_dsn": postgres_dsn})
        clustered = await space_vectors(pooled, space)

        embedded_toml = tmp_path / "embedded.toml"
        embedded_toml.write_text(
            f"data_dir = {json.dumps(str(tmp_path / 'embedded'))}\n[model]\nid = {json.dumps(str(tiny_model_dir))}\n"
            'precision = "fp32"\n'
        )
        code, out, err = await shira_command(embedded_toml, "index", str(sounds[0].parent), "--space", space, "--json")
        assert code == 0, err
        alone = await space_vectors(make_config(tmp_path / "embedded", tiny_model_dir), space)
        assert clustered.keys() == alone.keys() and len(alone) == FILES
        for sha, vector in alone.items():
            other = clustered[sha]
            cosine = float(vector @ other / (np.linalg.norm(vector) * np.linalg.norm(other)))
            assert cosine >= 0.99999, (sha, cosine)

        # a frontend SIGKILLed with a deferred (journaled) request in flight answers it after its restart
        held = encode(tone(0.7, freq=1234), tmp_path / "held.wav")
        release = fake.hold_download(held.name)
        attachment = fake.add_attachment(held.name, held.read_bytes(), "audio/wav")
        interaction = fake.slash("add", kim, attachments={"file": attachment})
        await fake.dispatch("INTERACTION_CREATE", interaction)
        victim = runs[owner]
        await victim.reaches(
            eventually(lambda: deferred(fake, interaction) and any(held.name in p for p in fake.downloads), "deferred"),
            "deferred the /add",
        )
        victim.proc.kill()
        assert await victim.proc.wait() == -signal.SIGKILL
        assert answer_of(fake, interaction) is None
        release.set()
        sessions = fake.sessions
        async with frontend(owner) as again:
            await again.reaches(eventually(lambda: fake.sessions > sessions, "identified again"), "identified")
            await again.reaches(
                eventually(lambda: answer_of(fake, interaction) is not None, "answered the /add"), "replayed"
            )
        assert again.returncode == 0, again.output  # SIGTERM: a clean stop
        answer = answer_of(fake, interaction)
        assert answer is not None and "Added #" in answer and "held" in answer, answer
        code, out, err = await shira_command(shared, "stats", "--space", space, "--json", env=env)
        assert code == 0, err
        assert json.loads(out)["samples"] == FILES + 1


async def _stop_worker(proc: asyncio.subprocess.Process, log: Path) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await wait_exit(proc, log)
