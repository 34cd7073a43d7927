"""Isolation between spaces, as a property: random additions, searches, plays, removals across many spaces.

One engine (tiny model) lives for the whole module, so each example also runs next to every earlier example's
spaces, and sample ids from those are thrown at it too. The rules checked after every step:
- search, similar, "more" and paging only return samples from the request's space, plus the global library when
  it is in extra_spaces;
- a sample from another space can't be played, "more"-d or removed (nor paged into through a query id);
- /remove works only for the uploader or an admin, and only in the sample's own space;
- stored names carry no path, files are stored by sha256 only, and removing a sample never deletes a file that
  another space still uses.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.audio import sha256
from core.engine import Engine
from core.messages import AudioRef, Command, Reply, ReplyKind, Request
from tests.conftest import make_config
from tests.library_checks import engine_problems, store_problems
from tests.support.sounds import encode, tone

GLOBAL = "global"
SPACES = ("a", "b", "c")
USERS = ("u1", "u2", "u3")
HOSTILE_NAMES = ("../../etc/passwd", "..\\..\\boot.ini", "a/b/c.wav", "..", ".", "", "$(rm -rf ~).wav", "x\x00y.wav")


class Library:
    """The engine, the loop it lives on, and the sounds to add (a plain class: hypothesis prints it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: Engine, data: Path, sounds: list[bytes]) -> None:
        self.loop = loop
        self.engine = engine
        self.data = data
        self.sounds = sounds
        self.examples = 0
        self.ids_ever: list[int] = []  # every id any example created, removed or not
        self.query_ids: list[tuple[str, tuple[str, ...]]] = []  # (query id, spaces it covers)

    def __repr__(self) -> str:
        return f"Library({self.data}, {self.examples} examples, {len(self.ids_ever)} ids)"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Library]:
    """One engine for every example, on a loop of its own."""
    root = tmp_path_factory.mktemp("isolation")
    sounds = [encode(tone(0.5, 180 + 97 * i), root / f"t{i}.wav").read_bytes() for i in range(6)]
    config = make_config(
        root / "data", tiny_model_dir, search={"vocabulary": "none"}, limits={"requests_per_minute": 0}
    )
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    engine = loop.run_until_complete(stack.enter_async_context(Engine.open(config, warm_labels=False)))
    yield Library(loop, engine, root / "data", sounds)
    loop.run_until_complete(stack.aclose())
    loop.close()


def ref(data: bytes, filename: str) -> AudioRef:
    async def fetch() -> bytes:
        return data

    return AudioRef(filename, fetch, size=len(data))


names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=30), st.text(max_size=12).map(lambda s: s + ".wav"))
space = st.sampled_from((*SPACES, GLOBAL))
chat_space = st.sampled_from(SPACES)
target = st.integers(0, 10_000)
operation = st.one_of(
    st.tuples(st.just("add"), space, st.sampled_from(USERS), st.integers(0, 5), names),
    st.tuples(st.just("search"), chat_space, st.booleans(), st.sampled_from(("tone", "beep", "t1 wav", "sound"))),
    st.tuples(st.just("similar"), chat_space, st.booleans(), st.integers(0, 5)),
    st.tuples(st.just("more"), chat_space, st.booleans(), target),
    st.tuples(st.just("play"), chat_space, st.booleans(), target),
    st.tuples(st.just("page"), chat_space, st.booleans(), target),
    st.tuples(st.just("remove"), chat_space, st.sampled_from(USERS), st.booleans(), target),
)


class Run:
    """One example: its own space names; the store's rows say who owns what (checked as each is added)."""

    def __init__(self, lib: Library) -> None:
        self.lib = lib
        self.engine = lib.engine
        self.prefix = f"ex{lib.examples}:"

    def key(self, name: str) -> str:
        return name if name == GLOBAL else self.prefix + name

    def request(
        self, command: Command, space: str, user: str = "u1", with_global: bool = False, **kw: object
    ) -> Request:
        extra = (GLOBAL,) if with_global else ()
        return Request("test", self.key(space), user, command, extra_spaces=extra, **kw)  # type: ignore[arg-type]

    def pick(self, n: int) -> int:
        ids = self.lib.ids_ever
        return ids[n % len(ids)] if ids else n % 7 + 1

    def visible(self, request: Request) -> set[str]:
        return {request.space, *request.extra_spaces}

    async def owner_of(self, sample_id: int) -> str | None:
        row = await self.engine.store.get_sample(sample_id)
        return row.space if row else None

    def check_results(self, reply: Reply, request: Request) -> None:
        assert reply.kind != ReplyKind.ERROR or reply.error_id is None, reply.text
        spaces = self.visible(request)
        crossed = [h for h in reply.hits if h.space not in spaces]
        assert not crossed, f"{request.command} from {request.space} saw {[(h.sample_id, h.space) for h in crossed]}"
        if reply.audio is not None and reply.kind == ReplyKind.RESULTS:
            assert reply.audio.sample_id in [h.sample_id for h in reply.hits]
        if reply.query_id:
            self.lib.query_ids.append((reply.query_id, tuple(sorted(spaces))))

    async def step(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        if kind == "add":
            _, where, user, sound, filename = op
            attachment = ref(self.lib.sounds[int(sound)], str(filename))  # type: ignore[call-overload]
            request = self.request(Command.ADD, str(where), str(user), audio=(attachment,))
            reply = await self.engine.handle(request)
            assert reply.kind == ReplyKind.ADDED, reply.text
            assert reply.added is not None
            assert all(h.space == request.space for h in reply.added.near_duplicates)
            row = await self.engine.store.get_sample(reply.added.sample_id)
            assert row is not None and row.space == request.space
            assert "/" not in row.name and "\\" not in row.name and row.name not in ("", ".", ".."), repr(row.name)
            assert re.fullmatch(r"\.[a-z0-9]{1,8}", row.ext), row.ext
            path = self.engine.files.path(row.sha256, row.ext)
            assert path.parent.parent == self.engine.files.root and path.read_bytes() == self.lib.sounds[int(sound)]
            if not reply.added.duplicate:
                assert row.uploader == user
                self.lib.ids_ever.append(row.id)
        elif kind in ("search", "similar"):
            _, where, with_global, arg = op
            if kind == "search":
                request = self.request(Command.SEARCH, str(where), with_global=bool(with_global), text=str(arg))
            else:
                audio = (ref(self.lib.sounds[int(arg)], "query.wav"),)  # type: ignore[call-overload]
                request = self.request(Command.SIMILAR, str(where), with_global=bool(with_global), audio=audio)
            reply = await self.engine.handle(request)
            assert reply.kind == ReplyKind.RESULTS, reply.text
            self.check_results(reply, request)
            if kind == "similar":  # the same sound, wherever the requester may see it, is found
                digest = sha256(self.lib.sounds[int(arg)])  # type: ignore[call-overload]
                for visible in self.visible(request):
                    copy = await self.engine.store.find_by_sha(visible, digest)
                    assert copy is None or copy in [h.sample_id for h in reply.hits], f"#{copy} in {visible} missed"
        elif kind in ("more", "play"):
            _, where, with_global, n = op
            sample_id = self.pick(int(n))
            command = Command.MORE if kind == "more" else Command.PLAY
            request = self.request(command, str(where), with_global=bool(with_global), text=str(sample_id))
            reply = await self.engine.handle(request)
            allowed = await self.owner_of(sample_id) in self.visible(request)
            if allowed:
                assert reply.kind == (ReplyKind.RESULTS if kind == "more" else ReplyKind.AUDIO), reply.text
                self.check_results(reply, request)
                if kind == "play":
                    assert reply.audio is not None and reply.audio.sample_id == sample_id and reply.audio.path.exists()
            else:
                assert reply.kind == ReplyKind.ERROR and reply.error_id is None, f"#{sample_id} leaked: {reply.text}"
                assert reply.audio is None and not reply.hits
        elif kind == "page":
            _, where, with_global, n = op
            if not self.lib.query_ids:
                return
            query_id, covered = self.lib.query_ids[int(n) % len(self.lib.query_ids)]
            request = self.request(Command.PAGE, str(where), with_global=bool(with_global), text=query_id, page=0)
            reply = await self.engine.handle(request)
            if not set(covered) <= self.visible(request):
                assert not reply.hits and reply.audio is None, f"paged into {covered} from {self.visible(request)}"
            self.check_results(reply, request)
        elif kind == "remove":
            _, where, user, is_admin, n = op
            sample_id = self.pick(int(n))
            request = self.request(Command.REMOVE, str(where), str(user), text=str(sample_id), is_admin=bool(is_admin))
            owner_space = await self.owner_of(sample_id)
            row = await self.engine.store.get_sample(sample_id)
            reply = await self.engine.handle(request)
            may = owner_space == request.space and row is not None and (row.uploader == user or bool(is_admin))
            if may:
                assert reply.kind == ReplyKind.REMOVED, reply.text
                assert await self.engine.store.get_sample(sample_id) is None
            else:
                assert reply.kind == ReplyKind.ERROR and reply.error_id is None, reply.text
                assert (await self.engine.store.get_sample(sample_id) is None) == (row is None)
                if owner_space == request.space:
                    assert "Only the person who added" in reply.text, reply.text

    async def run(self, ops: list[tuple[object, ...]]) -> None:
        for op in ops:
            await self.step(op)
        assert await engine_problems(self.engine) == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=st.lists(operation, min_size=2, max_size=14))
def test_spaces_never_leak(library: Library, ops: list[tuple[object, ...]]) -> None:
    library.examples += 1
    library.loop.run_until_complete(Run(library).run(ops))
    assert store_problems(library.data) == []


async def test_a_removal_never_deletes_a_file_another_space_is_adding(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Space a removes a sound while space b is adding the same file: b's sample must keep its file."""
    sound = encode(tone(0.5, 440), tmp_path / "shared.wav").read_bytes()
    config = make_config(tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"})
    async with Engine.open(config, warm_labels=False) as engine:
        first = await engine.ingest.add("a", sound, "shared.wav", uploader="u1")
        async with engine.library._lock:  # hold the engine's write lock so both operations queue up behind it
            removal = asyncio.create_task(engine.library.remove("a", first.sample_id))
            await asyncio.sleep(0.05)
            addition = asyncio.create_task(engine.ingest.add("b", sound, "shared.wav", uploader="u2"))
            for _ in range(1000):  # until the addition has done its model work and waits for the lock too
                if len(engine.library._lock._waiters or ()) == 2:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.01)
        await removal
        added = await addition
        row = await engine.store.get_sample(added.sample_id)
        assert row is not None and engine.files.path(row.sha256, row.ext).is_file(), "b's sound lost its file"
    assert store_problems(tmp_path / "data") == []


async def test_one_file_under_two_names_leaves_nothing_behind(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same bytes added as .wav in one space and .mp3 in another are one file; removing both removes it."""
    sound = encode(tone(0.5, 440), tmp_path / "shared.wav").read_bytes()
    config = make_config(tmp_path / "data", tiny_model_dir, search={"vocabulary": "none"})
    async with Engine.open(config, warm_labels=False) as engine:
        one = await engine.ingest.add("a", sound, "shared.wav", uploader="u1")
        two = await engine.ingest.add("b", sound, "renamed.mp3", uploader="u2")
        assert len(engine.files.all()) == 1
        await engine.library.remove("a", one.sample_id)
        row = await engine.store.get_sample(two.sample_id)
        assert row is not None and engine.files.path(row.sha256, row.ext).read_bytes() == sound
        assert store_problems(tmp_path / "data") == []
        await engine.library.remove("b", two.sample_id)
    assert store_problems(tmp_path / "data") == []
    assert not [p for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()]
