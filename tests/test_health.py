"""/healthz and /metrics: 200 when every part is alive, 503 with the reasons otherwise (a stuck event loop too);
counters that move with requests through the door; nothing listening unless [health] enables it."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bot import health
from bot.supervise import Supervisor
from core.config import ConfigError, HealthConfig
from core.engine import Engine
from core.messages import Command, Request
from tests.conftest import make_config
from tests.fakes.telegram_api import FakeTelegram, private_chat, user
from tests.support.process import STARTUP_SECONDS, shira_run, write_config


def get(url: str) -> tuple[int, str]:
    """GET url (blocking): status and body."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def fetch(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, url)


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text, 0 if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(120)
async def test_healthz_and_metrics_follow_the_requests_through_the_door(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_config(tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"})
    monitor = health.Monitor(Supervisor(down_seconds=60))
    async with Engine.open(config, warm_labels=False, metrics=monitor) as engine:
        server = health.serve(HealthConfig(enabled=True, port=0), monitor)
        assert server is not None
        base = f"http://127.0.0.1:{server.port}"
        try:
            status, body = await fetch(base + "/healthz")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            _, before = await fetch(base + "/metrics")
            assert sample(before, "shira_requests_total", command="search", outcome="ok") == 0
            for text in ("thunder", "rain", "thunder"):
                await engine.handle(Request("test", "s", "u", Command.SEARCH, text=text))
            await engine.handle(Request("test", "s", "u", Command.REMOVE, text="not a number"))
            status, after = await fetch(base + "/metrics")
            assert status == 200
            assert sample(after, "shira_requests_total", command="search", outcome="ok") == 3
            assert sample(after, "shira_requests_total", command="remove", outcome="refused") == 1
            assert sample(after, "shira_request_seconds_count", command="search") == 3
            assert sample(after, "shira_queue_seconds_count", priority="interactive") >= 2  # one text was cached
            assert sample(after, "shira_queue_wait_seconds_count", priority="interactive") >= 2
            for gauge in ("shira_queue_depth", "shira_bytes_in_flight", "shira_inbox_backlog"):
                assert f"\n{gauge} 0.0\n" in after, gauge

            monitor.check("discord", lambda: "disconnected from the gateway for 3 s")
            status, body = await fetch(base + "/healthz")
            assert status == 503
            assert json.loads(body) == {
                "status": "unhealthy",
                "problems": {"discord": "disconnected from the gateway for 3 s"},
            }
            assert (await fetch(base + "/nothing"))[0] == 404
        finally:
            await server.stop()
        assert not listening(server.port)


@pytest.mark.timeout(60)
async def test_a_stuck_event_loop_is_reported_not_hidden() -> None:
    monitor = health.Monitor(Supervisor(down_seconds=60))
    server = health.serve(HealthConfig(enabled=True, port=0), monitor)
    assert server is not None
    answer: list[tuple[int, str]] = []
    try:
        asking = threading.Thread(target=lambda: answer.append(get(f"http://127.0.0.1:{server.port}/healthz")))
        asking.start()
        time.sleep(health.LOOP_SECONDS + 1)  # the loop is blocked: the check can't run on it
        asking.join(10)
        status, body = answer[0]
        assert status == 503 and "event loop" in json.loads(body)["problems"], body
        assert (await fetch(f"http://127.0.0.1:{server.port}/healthz"))[0] == 200  # free again
    finally:
        await server.stop()


async def test_a_port_already_taken_is_a_config_error() -> None:
    monitor = health.Monitor(Supervisor(down_seconds=60))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"\[health\] can't listen on 127.0.0.1:{port}"):
            health.serve(HealthConfig(enabled=True, port=port), monitor)


async def test_disabled_nothing_listens() -> None:
    port = free_port()
    monitor = health.Monitor(Supervisor(down_seconds=60))
    assert health.serve(HealthConfig(enabled=False, port=port), monitor) is None
    assert not listening(port)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_shira_run_serves_health_and_metrics_when_enabled(tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    async with FakeTelegram(token="987654:health-token") as fake:
        settings = {"base_url": fake.base_url, "base_file_url": fake.base_file_url}
        config = write_config(tmp_path / "s.toml", tmp_path / "data", tiny_model_dir, "telegram", settings)
        config.write_text(config.read_text() + f"\n[health]\nenabled = true\nport = {port}\n")
        async with shira_run(config, {"SHIRA_TELEGRAM_TOKEN": fake.token}) as shira:
            await shira.reaches(fake.wait_for("getUpdates", timeout=STARTUP_SECONDS), "polled the fake Bot API")
            await shira.reaches(asyncio.sleep(0.5), "kept running")
            assert (await fetch(f"http://127.0.0.1:{port}/healthz"))[0] == 200, shira.output
            ann = user(5, "Ann")
            asked = fake.push_message(private_chat(ann), ann, "/help")
            await fake.wait_for(
                "sendMessage",
                lambda c: (c.params.get("reply_parameters") or {}).get("message_id") == asked["message_id"],
            )
            _, metrics = await fetch(f"http://127.0.0.1:{port}/metrics")
            assert sample(metrics, "shira_requests_total", command="help", outcome="ok") == 1, metrics
        assert shira.returncode == 0, shira.output
        assert not listening(port)
