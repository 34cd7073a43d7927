"""`shira run` killed at each moment of a request's life, or stopped with SIGTERM, against the fake platforms.

Each run is a real process forked from a server that has already imported torch (tests/forkserver.py), so a
restart takes a second or two. For each moment of a request's life, a run is given new requests and dies at that
moment: SHIRA_CRASH_AT makes it SIGKILL itself there (core/crashpoints.py), or the fake platform kills it the instant
it hears the acknowledgement. The next run, on the same data dir, must answer every request the platform was told
we took on, then stop cleanly on SIGTERM. In the end each is answered once, or twice when a kill fell between
delivering its answer and recording it; no sound is stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import LATE as DISCORD_LATE
from adapters.discord.adapter import RESTARTING
from adapters.telegram.adapter import LATE as TELEGRAM_LATE
from tests.crash_harness import make_sounds
from tests.fakes.discord_api import Call as DiscordCall
from tests.fakes.discord_api import FakeDiscord, user_payload
from tests.fakes.telegram_api import Call as TelegramCall
from tests.fakes.telegram_api import FakeTelegram, Json, private_chat, user
from tests.forkserver import ForkServer
from tests.support.process import write_config

pytestmark = pytest.mark.slow

MOMENTS = ("journaled", "acknowledged", "embedded", "committed", "replied")  # a run dies at each, in turn
BAD_LINES = ("Task exception was never retrieved", "Session is closed", "Traceback")
DRAIN_SECONDS = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    """One fork server for the module."""
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


# ----------------------------------------------------------------- runs


@dataclass
class Run:
    """One `shira run` forked from the server, writing its output to two files."""

    server: ForkServer
    pid: int
    out: Path
    err: Path

    @property
    def log(self) -> str:
        """What it has printed so far (nothing before the forked child has opened its files)."""
        return "".join(p.read_text(errors="replace") for p in (self.out, self.err) if p.exists())

    async def exit(self, timeout: float = 120.0) -> int:
        """Its exit code (-9: SIGKILLed), once it ends."""
        try:
            return await asyncio.to_thread(self.server.wait, self.pid, timeout)
        except TimeoutError:
            raise AssertionError(f"shira run still running after {timeout} s:\n{self.log}") from None

    async def logged(self, text: str, timeout: float = 60.0) -> None:
        """Wait until its output holds text."""
        async with asyncio.timeout(timeout):
            while text not in self.log:
                assert self.server.running(self.pid), f"shira run ended before logging {text!r}:\n{self.log}"
                await asyncio.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send it a signal (if it still runs)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)


@dataclass
class Runs:
    """Starts numbered runs of one config."""

    server: ForkServer
    root: Path
    config: Path
    env: dict[str, str]
    started: list[Run] = field(default_factory=list)

    def start(self, crash_at: str | None = None) -> Run:
        """Fork a run; with crash_at it kills itself at that moment."""
        n = len(self.started)
        out, err = self.root / f"run{n}.out", self.root / f"run{n}.err"
        env = self.env | ({"SHIRA_CRASH_AT": crash_at} if crash_at else {})
        run = Run(self.server, self.server.spawn(out, err, ["run", "--config", str(self.config)], env=env), out, err)
        self.started.append(run)
        return run


def kill_once(run: Run, when: Callable[[Any], bool]) -> Callable[[Any], None]:
    """A fake's observer that SIGKILLs the run at the first call matching `when` (as the call arrives)."""
    fired = False

    def observe(call: Any) -> None:
        nonlocal fired
        if not fired and when(call):
            fired = True
            run.kill()

    return observe


def confirms(update_id: int) -> Callable[[TelegramCall], bool]:
    """True at a getUpdates whose offset tells Telegram that update_id was taken on."""
    return lambda call: call.method == "getUpdates" and int(call.params.get("offset") or 0) > update_id


def defers_all(tokens: set[str]) -> Callable[[DiscordCall], bool]:
    """True at the call that defers the last of these interactions."""
    deferred: set[str] = set()

    def check(call: DiscordCall) -> bool:
        if call.path.endswith("/callback") and (call.body or {}).get("type") == 5:
            deferred.update(token for token in tokens if f"/{token}/" in call.path)
        return deferred == tokens

    return check


async def identified(fake: FakeDiscord, sessions: int) -> None:
    """Wait until this many gateway sessions have identified."""
    await fake.wait_until(lambda: fake.sessions >= sessions, timeout=120)


def rows(db: Path, sql: str, *args: object) -> list[Any]:
    """Query the data dir's database (a killed run's too: SQLite recovers it for the reader)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the run died before creating the tables
            return []


def inbox(db: Path, platform: str) -> dict[str, str]:
    """key -> state of a platform's journaled requests."""
    return dict(rows(db, "SELECT key, state FROM inbox WHERE platform = ?", platform))


def stored_twice(db: Path) -> list[Any]:
    """Files stored more than once in a library."""
    return rows(db, "SELECT space_id, sha256, count(*) FROM samples GROUP BY space_id, sha256 HAVING count(*) > 1")


# ----------------------------------------------------------------- what was asked and answered


@dataclass
class Asked:
    """One request sent to the bot, and how many answers it should end up with."""

    key: str  # its inbox key: the update_id, the interaction id or the message id
    is_add: bool
    payload: Json
    expected: int = 1


class Ledger:
    """Requests, the runs that saw them, and the answers each should have: the same rules for both platforms."""

    platform = ""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.asked: list[Asked] = []
        self.rounds: list[tuple[int, set[str]]] = []  # each run: its first call, and what was pending as it began

    def mark(self) -> int:
        raise NotImplementedError

    def answers(self, asked: Asked, since: int = 0, until: int | None = None) -> list[Any]:
        raise NotImplementedError

    def acknowledged(self, asked: Asked) -> bool:
        raise NotImplementedError

    def is_late(self, call: Any) -> bool:
        raise NotImplementedError

    def text(self, call: Any) -> str:
        raise NotImplementedError

    def begin(self) -> None:
        """A run is about to start."""
        pending = {key for key, state in inbox(self.db, self.platform).items() if state == "pending"}
        self.rounds.append((self.mark(), pending))

    def ended(self) -> None:
        """A run ended: what it had answered but not marked done is answered once more by the next."""
        states = inbox(self.db, self.platform)
        for asked in self.asked:
            if states.get(asked.key) == "pending" and len(self.answers(asked)) >= asked.expected:
                asked.expected += 1

    async def wait_settled(self, timeout: float = 90.0) -> None:
        """Wait until settled(); it is checked again after every call the fake platform receives."""
        raise NotImplementedError

    def settled(self) -> bool:
        """Every acknowledged request has at least the answers expected."""
        return all(len(self.answers(a)) >= (a.expected if self.acknowledged(a) else 0) for a in self.asked)

    def problems(self) -> list[str]:
        """Wrong answer counts; late answers not saying so, or prompt ones that do; additions not confirmed."""
        found = []
        for asked in self.asked:
            got, want = self.answers(asked), asked.expected if self.acknowledged(asked) else 0
            if len(got) != want:
                found.append(f"{asked.key}: {len(got)} answer(s), expected {want}")
            if asked.is_add and any("Added" not in self.text(c) or "lready" in self.text(c) for c in got):
                found.append(f"{asked.key}: an addition answered {[self.text(c) for c in got]}")
            if asked.is_add and len({tuple(re.findall(r"#(\d+)", self.text(c))[:1]) for c in got}) > 1:
                found.append(f"{asked.key}: answered with different sample ids")
        for n, (start, pending) in enumerate(self.rounds):
            until = self.rounds[n + 1][0] if n + 1 < len(self.rounds) else None
            for asked in self.asked:
                for call in self.answers(asked, start, until):
                    if self.is_late(call) != (asked.key in pending):
                        found.append(f"run {n}: {asked.key} answered {'late' if self.is_late(call) else 'promptly'}")
        return found


class TelegramLedger(Ledger):
    """Telegram keeps every update until a getUpdates confirms it: each one pushed counts as taken on."""

    platform = "telegram"

    def __init__(self, fake: FakeTelegram, db: Path) -> None:
        super().__init__(db)
        self.fake = fake
        self.chat_user = user(77, "Kim")
        self.chat = private_chat(self.chat_user)

    def ask(self, sounds: list[Path]) -> None:
        """Push two /add (voice notes) and two searches."""
        for n, path in enumerate(sounds):
            voice = self.fake.add_file(path.read_bytes(), kind="voice").as_voice(duration=1)
            message = self.fake.push_message(self.chat, self.chat_user, caption=f"/add {path.stem}", voice=voice)
            self.asked.append(Asked(str(self.fake.pushed[-1]["update_id"]), True, message))
            message = self.fake.push_message(self.chat, self.chat_user, f"/search tone {path.stem} {n}")
            self.asked.append(Asked(str(self.fake.pushed[-1]["update_id"]), False, message))

    def mark(self) -> int:
        return self.fake.mark()

    def answers(self, asked: Asked, since: int = 0, until: int | None = None) -> list[TelegramCall]:
        return [
            c
            for c in self.fake.calls[since:until]
            if c.method == "sendMessage"
            and (c.params.get("reply_parameters") or {}).get("message_id") == asked.payload["message_id"]
        ]

    def acknowledged(self, asked: Asked) -> bool:
        return True

    async def wait_settled(self, timeout: float = 90.0) -> None:
        await self.fake.wait_until(self.settled, timeout)

    def is_late(self, call: TelegramCall) -> bool:
        return str(call.params["text"]).startswith(TELEGRAM_LATE)

    def text(self, call: TelegramCall) -> str:
        return str(call.params["text"])


class DiscordLedger(Ledger):
    """An interaction is taken on once deferred; a voice message once journaled (Discord never sends it again)."""

    platform = "discord"

    def __init__(self, fake: FakeDiscord, db: Path) -> None:
        super().__init__(db)
        self.fake = fake
        self.member = user_payload(fake.new_id(), "kim")

    def batch(self, sounds: list[Path]) -> list[tuple[str, Json]]:
        """Two /add, a search and a voice message mentioning the bot, as gateway events."""
        events: list[tuple[str, Json]] = []
        for path in sounds[:2]:
            file = self.fake.add_attachment(path.name, path.read_bytes(), "audio/wav")
            events.append(("INTERACTION_CREATE", self.fake.slash("add", self.member, attachments={"file": file})))
        events.append(
            ("INTERACTION_CREATE", self.fake.slash("search", self.member, {"query": f"tone {sounds[0].stem}"}))
        )
        voice = self.fake.add_attachment(f"voice-{sounds[2].name}", sounds[2].read_bytes(), "audio/wav", voice=True)
        events.append(
            ("MESSAGE_CREATE", self.fake.user_message(self.member, attachments=(voice,), voice=True, mention_bot=True))
        )
        for kind, data in events:
            self.asked.append(Asked(data["id"], kind == "INTERACTION_CREATE" and data["data"]["name"] == "add", data))
        return events

    def mark(self) -> int:
        return len(self.fake.calls)

    def answers(self, asked: Asked, since: int = 0, until: int | None = None) -> list[DiscordCall]:
        calls = self.fake.calls[since:until]
        if "token" not in asked.payload:  # a message: replied to in its channel
            return [
                c
                for c in calls
                if c.method == "POST"
                and c.path == f"/channels/{asked.payload['channel_id']}/messages"
                and c.status == 200
                and str(((c.body or {}).get("message_reference") or {}).get("message_id")) == asked.key
            ]
        token = asked.payload["token"]
        return [
            c
            for c in calls
            if f"/{token}/" in c.path + "/"
            and c.status in (200, 204)
            and (
                (c.method == "PATCH" and c.path.endswith("/messages/@original"))
                or (c.method == "POST" and c.path.startswith("/webhooks/") and "/messages/" not in c.path)
            )
        ]

    def acknowledged(self, asked: Asked) -> bool:
        if "token" not in asked.payload:
            return asked.key in inbox(self.db, self.platform) or bool(self.answers(asked))
        token = asked.payload["token"]
        return any(
            c.path.endswith(f"/{token}/callback") and (c.body or {}).get("type") in (5, 6) for c in self.fake.calls
        )

    async def wait_settled(self, timeout: float = 90.0) -> None:
        await self.fake.wait_until(self.settled, timeout)

    def is_late(self, call: DiscordCall) -> bool:
        return str((call.body or {}).get("content") or "").startswith(DISCORD_LATE)

    def text(self, call: DiscordCall) -> str:
        body = call.body or {}
        return " ".join([str(body.get("content") or "")] + [e.get("title", "") for e in body.get("embeds") or []])


async def dispatch(fake: FakeDiscord, events: list[tuple[str, Json]]) -> None:
    """Send gateway events; a run that has died meanwhile just never hears the rest."""
    for event, data in events:
        with contextlib.suppress(RuntimeError, ConnectionError):
            await fake.dispatch(event, data)


# ----------------------------------------------------------------- configs


def telegram_config(tmp_path: Path, model_dir: Path, fake: FakeTelegram) -> Path:
    settings = {"base_url": fake.base_url, "base_file_url": fake.base_file_url}
    return write_config(tmp_path / "shira.toml", tmp_path / "data", model_dir, "telegram", settings, common())


def discord_config(tmp_path: Path, model_dir: Path, fake: FakeDiscord) -> Path:
    return write_config(tmp_path / "shira.toml", tmp_path / "data", model_dir, "discord", fake.endpoints(), common())


def common() -> dict[str, dict[str, object]]:
    """No label vocabulary (nothing to warm up), no rate limit, a short drain."""
    return {
        "search": {"vocabulary": "none"},
        "limits": {"requests_per_minute": 0},
        "run": {"drain_seconds": DRAIN_SECONDS},
    }


async def settle(ledger: Ledger, runs: Runs) -> Run:
    """Start a run, wait until every request taken on has its answers, and stop it with SIGTERM."""
    ledger.begin()
    run = runs.start()
    try:
        await ledger.wait_settled()
    except TimeoutError:
        raise AssertionError(f"not answered: {ledger.problems()}\n{run.log}") from None
    await run.logged("shira is running")  # nothing may have been pending: still, stop only a run that has started
    run.kill(signal.SIGTERM)
    assert await run.exit(30) == 0, run.log
    ledger.ended()
    clean(run)
    return run


def clean(run: Run) -> None:
    """A run that stopped by itself left no task errors and no closed-session errors behind."""
    assert not [line for line in BAD_LINES if line in run.log], run.log


# ----------------------------------------------------------------- kills


@pytest.mark.timeout(240)
async def test_telegram_kills_at_every_moment_lose_no_acknowledged_request(
    server: ForkServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    sounds = make_sounds(tmp_path / "sounds", 2 * len(MOMENTS), seed=7, seconds=0.5)
    async with FakeTelegram(token="246810:inbox-process-token") as fake:
        runs = Runs(
            server, tmp_path, telegram_config(tmp_path, tiny_model_dir, fake), {"SHIRA_TELEGRAM_TOKEN": fake.token}
        )
        ledger = TelegramLedger(fake, tmp_path / "data" / "shira.db")
        for n, moment in enumerate(MOMENTS):
            ledger.ask(sounds[2 * n : 2 * n + 2])  # waiting at Telegram: the run's first poll fetches them
            ledger.begin()
            if moment == "acknowledged":  # the instant Telegram hears, through the offset, that all are taken
                run = runs.start()
                fake.observe(kill_once(run, confirms(int(ledger.asked[-1].key))))
            else:
                run = runs.start(crash_at=moment)
            assert await run.exit() == -9, run.log
            ledger.ended()
            await settle(ledger, runs)
    assert ledger.problems() == []
    assert any(a.expected == 2 for a in ledger.asked)  # the kill between answering and recording
    assert "pending" not in inbox(ledger.db, "telegram").values()
    assert stored_twice(ledger.db) == [] and len(rows(ledger.db, "SELECT id FROM samples")) == len(sounds)


@pytest.mark.timeout(240)
async def test_discord_kills_at_every_moment_lose_no_acknowledged_request(
    server: ForkServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    sounds = make_sounds(tmp_path / "sounds", 3 * len(MOMENTS), seed=11, seconds=0.5)
    async with FakeDiscord(token="inbox-process-discord-token") as fake:
        runs = Runs(
            server, tmp_path, discord_config(tmp_path, tiny_model_dir, fake), {"SHIRA_DISCORD_TOKEN": fake.token}
        )
        ledger = DiscordLedger(fake, tmp_path / "data" / "shira.db")
        for n, moment in enumerate(MOMENTS):
            ledger.begin()
            sessions = fake.sessions
            run = runs.start(crash_at=None if moment == "acknowledged" else moment)
            await identified(fake, sessions + 1)
            events = ledger.batch(sounds[3 * n : 3 * n + 3])
            if moment == "acknowledged":  # the instant Discord hears the last of the three deferrals
                fake.observe(kill_once(run, defers_all({data["token"] for _, data in events if "token" in data})))
            await dispatch(fake, events)
            assert await run.exit() == -9, run.log
            ledger.ended()
            await settle(ledger, runs)
    assert ledger.problems() == []
    assert any(a.expected == 2 for a in ledger.asked)
    assert "pending" not in inbox(ledger.db, "discord").values()
    taken_adds = [a for a in ledger.asked if a.is_add and ledger.acknowledged(a)]
    assert stored_twice(ledger.db) == [] and len(rows(ledger.db, "SELECT id FROM samples")) == len(taken_adds)


# ----------------------------------------------------------------- SIGTERM


@pytest.mark.timeout(150)
async def test_telegram_sigterm_answers_what_is_in_flight_and_the_next_start_the_rest(
    server: ForkServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    quick, slow = make_sounds(tmp_path / "sounds", 2, seed=3, seconds=0.5)
    async with FakeTelegram(token="246810:inbox-process-token") as fake:
        runs = Runs(
            server, tmp_path, telegram_config(tmp_path, tiny_model_dir, fake), {"SHIRA_TELEGRAM_TOKEN": fake.token}
        )
        ledger = TelegramLedger(fake, tmp_path / "data" / "shira.db")
        files = [fake.add_file(p.read_bytes(), kind="voice") for p in (quick, slow)]
        releases = [fake.hold("getFile", lambda p, f=f: p.get("file_id") == f.file_id) for f in files]  # type: ignore[misc]
        chat, kim = ledger.chat, ledger.chat_user
        messages = [
            fake.push_message(chat, kim, caption=f"/add {path.stem}", voice=file.as_voice(duration=1))
            for path, file in zip((quick, slow), files, strict=True)
        ]
        ledger.asked += [Asked(str(u["update_id"]), True, m) for u, m in zip(fake.pushed, messages, strict=True)]
        ledger.begin()
        run = runs.start()
        for file in files:  # both downloads are in flight
            await fake.wait_for("getFile", lambda c, f=file: c.params.get("file_id") == f.file_id, timeout=120)  # type: ignore[misc]
        run.kill(signal.SIGTERM)
        await run.logged("shutting down")
        releases[0].set()  # the first finishes within drain_seconds; the second is still downloading after
        assert await run.exit(30) == 0, run.log
        clean(run)
        assert "1 update(s) not answered in time" in run.log
        assert [len(ledger.answers(a)) for a in ledger.asked] == [1, 0]
        assert inbox(ledger.db, "telegram") == {ledger.asked[0].key: "done", ledger.asked[1].key: "pending"}
        assert fake.pending == []  # both were confirmed to Telegram: the inbox has the second

        releases[1].set()
        ledger.ended()
        await settle(ledger, runs)
    assert ledger.problems() == []  # the second was answered by the next run, and said it was late
    assert inbox(ledger.db, "telegram") == {ledger.asked[0].key: "done", ledger.asked[1].key: "done"}


@pytest.mark.timeout(150)
async def test_discord_sigterm_answers_what_is_in_flight_and_the_next_start_the_rest(
    server: ForkServer, tmp_path: Path, tiny_model_dir: Path
) -> None:
    quick, slow = make_sounds(tmp_path / "sounds", 2, seed=5, seconds=0.5)
    async with FakeDiscord(token="inbox-process-discord-token") as fake:
        runs = Runs(
            server, tmp_path, discord_config(tmp_path, tiny_model_dir, fake), {"SHIRA_DISCORD_TOKEN": fake.token}
        )
        ledger = DiscordLedger(fake, tmp_path / "data" / "shira.db")
        releases = [fake.hold_download(path.name) for path in (quick, slow)]
        ledger.begin()
        run = runs.start()
        await identified(fake, 1)
        events = []
        for path in (quick, slow):
            file = fake.add_attachment(path.name, path.read_bytes(), "audio/wav")
            events.append(("INTERACTION_CREATE", fake.slash("add", ledger.member, attachments={"file": file})))
        ledger.asked += [Asked(data["id"], True, data) for _, data in events]
        await dispatch(fake, events)
        await fake.wait_until(lambda: len(fake.downloads) == 2, timeout=60)  # both in flight
        run.kill(signal.SIGTERM)
        await run.logged("shutting down")
        late_comer = fake.slash("help", ledger.member)
        await dispatch(fake, [("INTERACTION_CREATE", late_comer)])
        (told,) = await fake.wait_for("POST", rf"/interactions/{late_comer['id']}/{late_comer['token']}/callback")
        releases[0].set()
        assert await run.exit(30) == 0, run.log
        clean(run)
        assert told.body["type"] == 4 and RESTARTING in told.body["data"]["content"]
        assert "1 request(s) not answered in time" in run.log
        assert [len(ledger.answers(a)) for a in ledger.asked] == [1, 0]
        assert inbox(ledger.db, "discord") == {ledger.asked[0].key: "done", ledger.asked[1].key: "pending"}

        releases[1].set()
        ledger.ended()
        await settle(ledger, runs)
    assert ledger.problems() == []
    assert inbox(ledger.db, "discord") == {ledger.asked[0].key: "done", ledger.asked[1].key: "done"}
