"""Health and metrics: the core's reports as Prometheus metrics, and an optional HTTP listener for /healthz and
/metrics, served from its own thread so that a stuck event loop is reported rather than hidden."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.supervise import Supervisor
from core.config import ConfigError, HealthConfig
from core.metrics import GAUGES, Check

log = logging.getLogger(__name__)

LOOP_SECONDS = 2.0  # the event loop must run a health check within this long to count as alive
SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
T = TypeVar("T")


class Monitor:
    """core.metrics.Metrics on a private Prometheus registry; health checks go to the supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shira_requests",
            "Requests answered, by command and outcome",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "shira_request_seconds", "Time to answer a request", ["command"], buckets=SECONDS, registry=self.registry
        )
        self.queue_wait = Histogram(
            "shira_queue_wait_seconds",
            "Time a model job waited before the model took it up",
            ["priority"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "shira_queue_seconds",
            "Time a model job spent in the queue, waiting and running",
            ["priority"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.gauges = {
            name: Gauge(f"shira_{name}", about, registry=self.registry) for name, about in GAUGES.items()
        }  # inbox_backlog reads 0 until something reports it

    def request(self, command: str, outcome: str, seconds: float) -> None:
        """One request answered."""
        self.requests.labels(command, outcome).inc()
        self.request_seconds.labels(command).observe(seconds)

    def job(self, priority: str, waited: float, seconds: float) -> None:
        """One model job finished (called from the model's thread; prometheus_client is thread-safe)."""
        self.queue_wait.labels(priority).observe(waited)
        self.queue_seconds.labels(priority).observe(seconds)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Report one of core.metrics.GAUGES by a function read at each scrape."""
        self.gauges[name].set_function(read)

    def check(self, name: str, check: Check) -> None:
        """A part's health check: watched by the supervisor, reported by /healthz."""
        self.supervisor.watch(name, check)

    def metrics(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class HealthServer:
    """GET /healthz (200, or 503 with the reasons as JSON) and GET /metrics, on a thread of their own."""

    def __init__(self, monitor: Monitor, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.monitor = monitor
        self.loop = loop
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="shira-health", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Start answering."""
        self._thread.start()
        log.info("health: /healthz and /metrics on http://%s:%d", self.server.server_address[0], self.port)

    async def stop(self) -> None:
        """Stop answering and close the socket."""
        await asyncio.to_thread(self.server.shutdown)
        self.server.server_close()

    def health(self) -> tuple[int, dict[str, Any]]:
        """The status code and JSON body of /healthz (called on the server's thread)."""
        problems = self._on_loop(_problems(self.monitor.supervisor))
        if problems is None:
            problems = {"event loop": f"did not run a health check within {LOOP_SECONDS:.0f} s"}
        if problems:
            return 503, {"status": "unhealthy", "problems": problems}
        return 200, {"status": "ok"}

    def metrics(self) -> bytes | None:
        """The metrics text, read on the event loop (the gauges' functions read the core's state there)."""
        return self._on_loop(_call(self.monitor.metrics))

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T | None:
        """Run coroutine on the event loop and wait for it; None if the loop doesn't get to it in time."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:  # the loop is closed
            coroutine.close()
            return None
        try:
            return future.result(LOOP_SECONDS)
        except FutureTimeout:
            future.cancel()
            return None


async def _problems(supervisor: Supervisor) -> dict[str, str]:
    return supervisor.problems()


async def _call(read: Callable[[], T]) -> T:
    return read()


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """GET /healthz and /metrics; anything else is 404."""

        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                code, body = server.health()
                self._send(code, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                text = server.metrics()
                if text is None:
                    self._send(503, "text/plain; charset=utf-8", b"the event loop did not answer\n")
                else:
                    self._send(200, CONTENT_TYPE_LATEST, text)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server signature)
            log.debug("health: " + format, *args)

    return Handler


def serve(config: HealthConfig, monitor: Monitor) -> HealthServer | None:
    """Start the listener if [health] enables it (on the running loop), else None: nothing listens."""
    if not config.enabled:
        return None
    try:
        server = HealthServer(monitor, asyncio.get_running_loop(), config.host, config.port)
    except OSError as exc:
        raise ConfigError(f"[health] can't listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    server.start()
    return server
