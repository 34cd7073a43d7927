"""The engine end to end on the tiny model: add, dedupe, search, identify, page, remove, restart."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core.config import Config
from core.engine import Engine
from core.messages import AudioRef, Command, ReplyKind, Request
from tests.conftest import make_config
from tests.support.sounds import chirp, click, encode, noise, tone


def ref(path: Path, calls: list[str] | None = None) -> AudioRef:
    async def fetch() -> bytes:
        if calls is not None:
            calls.append(path.name)
        return path.read_bytes()

    return AudioRef(path.name, fetch, size=path.stat().st_size)


def req(command: Command, text: str = "", audio: tuple[AudioRef, ...] = (), user: str = "u1", **kw: object) -> Request:
    return Request(platform="test", space="s1", user=user, command=command, text=text, audio=audio, **kw)  # type: ignore[arg-type]


@pytest.fixture
def config(backend_config: Config) -> Config:
    """The tests here that take config (or engine) run on both stores, SQLite and PostgreSQL, with the same asserts."""
    return backend_config


@pytest.fixture
def sounds(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "sounds"
    d.mkdir()
    return {
        "tone": encode(tone(2.0, 440), d / "tone_440.wav"),
        "noise": encode(noise(3.0), d / "white_noise.mp3"),
        "chirp": encode(chirp(23.0), d / "long_chirp.ogg"),
        "thunder": encode(noise(2.0, seed=7) * np.linspace(1, 0, 96000, dtype=np.float32), d / "thunder_storm.flac"),
        "click": encode(click(), d / "click.wav"),
    }


async def add_all(engine: Engine, sounds: dict[str, Path], space: str = "s1") -> dict[str, int]:
    ids = {}
    for key, path in sounds.items():
        result = await engine.ingest.add(space, path.read_bytes(), path.name, uploader="u1")
        assert not result.duplicate
        ids[key] = result.sample_id
    return ids


async def test_add_stores_file_rows_and_index(engine: Engine, sounds: dict[str, Path]) -> None:
    reply = await engine.handle(req(Command.ADD, "a long sweep", (ref(sounds["chirp"]),)))
    assert reply.kind == ReplyKind.ADDED and reply.added is not None
    added = reply.added
    assert added.name == "long_chirp.ogg" and abs(added.duration - 23.0) < 0.05
    row = await engine.store.get_sample(added.sample_id)
    assert row is not None and row.description == "a long sweep" and row.uploader == "u1"
    assert engine.files.path(row.sha256, row.ext).read_bytes() == sounds["chirp"].read_bytes()
    segments = (await engine.store.segments([added.sample_id]))[added.sample_id]
    assert [(s, e) for s, e, _ in segments] == [(0.0, 10.0), (10.0, 20.0), (13.0, 23.0)]
    assert len(engine.indexes.get("s1")) == 1
    assert f"#{added.sample_id}" in reply.text


async def test_exact_duplicate_is_reported_not_stored(engine: Engine, sounds: dict[str, Path]) -> None:
    first = await engine.handle(req(Command.ADD, audio=(ref(sounds["tone"]),)))
    again = await engine.handle(req(Command.ADD, audio=(ref(sounds["tone"]),)))
    assert again.added is not None and again.added.duplicate
    assert again.added.sample_id == first.added.sample_id  # type: ignore[union-attr]
    assert f"already in the library as #{first.added.sample_id}" in again.text.lower()  # type: ignore[union-attr]
    assert await engine.store.count("s1") == 1


async def test_a_replayed_addition_answers_as_the_first_run_would_have(engine: Engine, sounds: dict[str, Path]) -> None:
    first = await engine.handle(req(Command.ADD, "a pure tone", (ref(sounds["tone"]),)))
    assert first.added is not None
    replayed = await engine.handle(req(Command.ADD, "a pure tone", (ref(sounds["tone"]),), replay=True))
    assert replayed.added is not None and not replayed.added.duplicate
    assert replayed.text.startswith(f"Added #{first.added.sample_id} tone_440.wav (2.0 s).")
    assert set(replayed.added.tags) == set(first.added.tags)
    # Someone else's replay of the same file did not add it: for them it is a plain duplicate.
    other = await engine.handle(req(Command.ADD, audio=(ref(sounds["tone"]),), user="u2", replay=True))
    assert other.added is not None and other.added.duplicate
    assert await engine.store.count("s1") == 1


async def test_near_copy_is_reported(tmp_path: Path, tiny_model_dir: Path, sounds: dict[str, Path]) -> None:
    config = make_config(tmp_path / "d", tiny_model_dir, search={"near_duplicate": 0.9999})
    copy = encode(tone(2.0, 440), tmp_path / "tone_copy.flac")  # same sound, other bytes
    async with Engine.open(config, warm_labels=False) as engine:
        original = await engine.ingest.add("s1", sounds["tone"].read_bytes(), "tone.wav")
        other = await engine.ingest.add("s1", sounds["noise"].read_bytes(), "noise.mp3")
        near = await engine.ingest.add("s1", copy.read_bytes(), "tone_copy.flac")
    assert [h.sample_id for h in near.near_duplicates] == [original.sample_id]
    assert original.sample_id not in [h.sample_id for h in other.near_duplicates]
    assert not near.duplicate and near.sample_id not in (original.sample_id, other.sample_id)


async def test_similar_returns_the_same_file_first(engine: Engine, sounds: dict[str, Path]) -> None:
    ids = await add_all(engine, sounds)
    for key in ("tone", "chirp", "click"):
        reply = await engine.handle(req(Command.SIMILAR, audio=(ref(sounds[key]),)))
        assert reply.kind == ReplyKind.RESULTS
        assert reply.hits[0].sample_id == ids[key]
        assert reply.hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert reply.audio is not None and reply.audio.sample_id == ids[key] and reply.audio.path.exists()
        scores = [h.score for h in reply.hits]
        assert scores == sorted(scores, reverse=True)


async def test_hybrid_search_uses_names_and_can_be_switched_off(
    tmp_path: Path, tiny_model_dir: Path, sounds: dict[str, Path]
) -> None:
    for hybrid in (True, False):
        config = make_config(tmp_path / f"h{hybrid}", tiny_model_dir, search={"hybrid": hybrid, "k": 5})
        async with Engine.open(config, warm_labels=False) as engine:
            ids = await add_all(engine, sounds)
            hits, _ = await engine.searcher.search_text(("s1",), "thunder", 5)
            vector = await engine.encoder.embed_text("thunder")
        assert len(hits) == 5
        for hit in hits:
            assert -1.0 <= hit.score <= 1.0 and 0 <= hit.start <= hit.end <= hit.duration + 1e-6
        if hybrid:
            assert hits[0].sample_id == ids["thunder"]
        else:
            stored = {h.sample_id: h.score for h in hits}
            assert [h.sample_id for h in hits] == sorted(stored, key=lambda i: -stored[i])
            assert np.isclose(np.linalg.norm(vector), 1.0)


async def test_long_file_hit_carries_the_best_window(engine: Engine, sounds: dict[str, Path]) -> None:
    ids = await add_all(engine, sounds)
    reply = await engine.handle(req(Command.SIMILAR, audio=(ref(sounds["chirp"]),), k=10))
    chirp_hit = next(h for h in reply.hits if h.sample_id == ids["chirp"])
    assert (chirp_hit.start, chirp_hit.end) in [(0.0, 10.0), (10.0, 20.0), (13.0, 23.0)]


async def test_identify_gives_labels_and_hits(engine: Engine, sounds: dict[str, Path]) -> None:
    await add_all(engine, sounds)
    await engine.handle(req(Command.LABELS, "add squeaky door"))
    reply = await engine.handle(req(Command.IDENTIFY, audio=(ref(sounds["noise"]),)))
    assert reply.kind == ReplyKind.IDENTIFY
    assert len(reply.labels) == engine.config.search.labels
    probs = [label.score for label in reply.labels]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert len(reply.hits) == engine.config.search.k and reply.audio is not None
    vocabulary = {*engine.encoder.labeler.vocabulary, "squeaky door"}  # type: ignore[union-attr]
    assert all(label.label in vocabulary for label in reply.labels)
    again = await engine.handle(req(Command.IDENTIFY, audio=(ref(sounds["noise"]),)))
    assert again.labels == reply.labels  # deterministic


async def test_label_embeddings_are_cached_by_model(engine: Engine) -> None:
    labeler = engine.encoder.labeler
    assert labeler is not None
    await labeler.vectors(["Thunder", "Dog"])
    cached = await engine.store.cached_texts(labeler.model_key, [labeler.prompt.format(label="Thunder")])
    assert len(cached) == 1


async def test_paging_covers_every_result_once(engine: Engine, sounds: dict[str, Path]) -> None:
    await add_all(engine, sounds)
    first = await engine.handle(req(Command.SEARCH, "noise", k=2))
    assert len(first.hits) == 2 and first.has_more and first.query_id
    seen = [h.sample_id for h in first.hits]
    page, reply = 0, first
    while reply.has_more:
        page += 1
        reply = await engine.handle(req(Command.PAGE, first.query_id or "", page=page))
        assert reply.kind == ReplyKind.RESULTS and reply.page == page
        seen += [h.sample_id for h in reply.hits]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 5
    expired = await engine.handle(req(Command.PAGE, "nope", page=1))
    assert expired.kind == ReplyKind.ERROR and "expired" in expired.text


async def test_more_like_this_and_play(engine: Engine, sounds: dict[str, Path]) -> None:
    ids = await add_all(engine, sounds)
    more = await engine.handle(req(Command.MORE, str(ids["tone"])))
    others = sorted(i for name, i in ids.items() if name != "tone")
    assert more.title.startswith(f"More like #{ids['tone']}")
    assert sorted(h.sample_id for h in more.hits) == others[: len(more.hits)] or set(
        h.sample_id for h in more.hits
    ) <= set(others)
    assert more.hits and ids["tone"] not in [h.sample_id for h in more.hits]  # not the sample itself
    play = await engine.handle(req(Command.PLAY, f"#{ids['click']}"))
    assert play.kind == ReplyKind.AUDIO and play.audio is not None
    assert play.audio.path.read_bytes() == sounds["click"].read_bytes()
    missing = await engine.handle(req(Command.PLAY, "9999"))
    assert missing.kind == ReplyKind.ERROR and "#9999" in missing.text


async def test_remove_permissions_and_file_lifetime(engine: Engine, sounds: dict[str, Path]) -> None:
    mine = await engine.ingest.add("s1", sounds["tone"].read_bytes(), "tone.wav", uploader="u1")
    shared = await engine.ingest.add("s2", sounds["tone"].read_bytes(), "tone.wav", uploader="u9")
    row = await engine.store.get_sample(mine.sample_id)
    assert row is not None
    path = engine.files.path(row.sha256, row.ext)

    refused = await engine.handle(req(Command.REMOVE, str(mine.sample_id), user="u2"))
    assert refused.kind == ReplyKind.ERROR and "uploader" not in refused.text and "admin" in refused.text
    elsewhere = await engine.handle(req(Command.REMOVE, str(shared.sample_id), user="u9"))
    assert elsewhere.kind == ReplyKind.ERROR  # not in this space
    done = await engine.handle(req(Command.REMOVE, str(mine.sample_id), user="u1"))
    assert done.kind == ReplyKind.REMOVED
    assert await engine.store.get_sample(mine.sample_id) is None
    assert len(engine.indexes.get("s1")) == 0
    assert path.exists()  # still used by s2
    admin = await engine.handle(Request("test", "s2", "u3", Command.REMOVE, str(shared.sample_id), is_admin=True))
    assert admin.kind == ReplyKind.REMOVED and not path.exists()


async def test_rate_limit_and_quota(tmp_path: Path, tiny_model_dir: Path, sounds: dict[str, Path]) -> None:
    config = make_config(tmp_path / "d", tiny_model_dir, limits={"requests_per_minute": 3, "space_quota": 2})
    calls: list[str] = []
    async with Engine.open(config, warm_labels=False) as engine:
        assert (await engine.handle(req(Command.ADD, audio=(ref(sounds["tone"], calls),)))).kind == ReplyKind.ADDED
        assert (await engine.handle(req(Command.ADD, audio=(ref(sounds["noise"], calls),)))).kind == ReplyKind.ADDED
        full = await engine.handle(req(Command.ADD, audio=(ref(sounds["click"], calls),)))
        assert full.kind == ReplyKind.ERROR and "full" in full.text
        assert calls == ["tone_440.wav", "white_noise.mp3"]  # the quota was checked before downloading
        limited = await engine.handle(req(Command.STATS))
        assert limited.kind == ReplyKind.BUSY and "too quickly" in limited.text
        assert (await engine.handle(req(Command.STATS, user="u2"))).kind == ReplyKind.STATS


async def test_user_errors_are_friendly_and_internal_errors_get_an_id(
    engine: Engine, sounds: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = await engine.handle(req(Command.SEARCH, "   "))
    assert empty.kind == ReplyKind.ERROR and "/search" in empty.text
    no_audio = await engine.handle(req(Command.ADD))
    assert no_audio.kind == ReplyKind.ERROR and "attach" in no_audio.text
    bad = tmp_path / "bad.ogg"
    bad.write_text("not audio")
    broken = await engine.handle(req(Command.ADD, audio=(ref(bad),)))
    assert broken.kind == ReplyKind.ERROR and "decode" in broken.text
    assert await engine.store.count("s1") == 0

    async def explode() -> None:
        raise RuntimeError("disk on fire")

    engine.store.stats = explode  # type: ignore[method-assign,assignment]
    reply = await engine.handle(req(Command.STATS))
    assert reply.kind == ReplyKind.ERROR and reply.error_id and reply.error_id in reply.text
    assert "disk on fire" not in reply.text
    assert any(reply.error_id in r.getMessage() for r in caplog.records)


async def test_restart_gives_the_same_results(config: Config, sounds: dict[str, Path]) -> None:
    async with Engine.open(config, warm_labels=False) as engine:
        await add_all(engine, sounds)
        before, _ = await engine.searcher.search_text(("s1",), "a thunder storm", 5)
        similar_before = await engine.handle(req(Command.SIMILAR, audio=(ref(sounds["chirp"]),)))
    async with Engine.open(config, warm_labels=False) as engine:
        assert engine.indexes.get("s1") is not None  # loaded from disk at start-up
        after, _ = await engine.searcher.search_text(("s1",), "a thunder storm", 5)
        similar_after = await engine.handle(req(Command.SIMILAR, audio=(ref(sounds["chirp"]),)))
    assert [(h.sample_id, round(h.score, 5)) for h in before] == [(h.sample_id, round(h.score, 5)) for h in after]
    assert [h.sample_id for h in similar_before.hits] == [h.sample_id for h in similar_after.hits]


async def test_stale_index_is_rebuilt_from_the_store(
    tmp_path: Path, tiny_model_dir: Path, sounds: dict[str, Path]
) -> None:
    config = make_config(tmp_path / "data", tiny_model_dir)  # SQLite: a row is deleted behind the store's back
    async with Engine.open(config, warm_labels=False) as engine:
        ids = await add_all(engine, sounds)
    # Simulate a crash after a commit the saved index never saw: delete a row behind the index's back.
    with sqlite3.connect(Path(config.data_dir) / "shira.db") as db:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("DELETE FROM samples WHERE id = ?", (ids["noise"],))
        db.execute("UPDATE spaces SET revision = revision + 1")
    async with Engine.open(config, warm_labels=False) as engine:
        assert len(engine.indexes.get("s1")) == 4
        hits, _ = await engine.searcher.search_text(("s1",), "noise", 10)
        assert ids["noise"] not in [h.sample_id for h in hits] and len(hits) == 4


async def test_global_library_is_searched_only_when_asked(engine: Engine, sounds: dict[str, Path]) -> None:
    g = await engine.ingest.add("global", sounds["tone"].read_bytes(), "tone.wav")
    await engine.ingest.add("s1", sounds["noise"].read_bytes(), "noise.mp3")
    alone = await engine.handle(req(Command.SEARCH, "tone", k=10))
    both = await engine.handle(dataclasses.replace(req(Command.SEARCH, "tone", k=10), extra_spaces=("global",)))
    assert g.sample_id not in [h.sample_id for h in alone.hits]
    assert g.sample_id in [h.sample_id for h in both.hits]
    stolen = await engine.handle(req(Command.REMOVE, str(g.sample_id), is_admin=True, extra_spaces=("global",)))
    assert stolen.kind == ReplyKind.ERROR and await engine.store.get_sample(g.sample_id) is not None


async def test_auto_tags_make_sounds_findable_by_words(
    tmp_path: Path, tiny_model_dir: Path, sounds: dict[str, Path]
) -> None:
    config = make_config(
        tmp_path / "d", tiny_model_dir, search={"vocabulary": "none", "autotags": 2, "autotag_min_score": 0.0}
    )
    async with Engine.open(config) as engine:
        await engine.handle(req(Command.LABELS, "add woodpecker", is_admin=True))
        await engine.handle(req(Command.LABELS, "add foghorn", is_admin=True))
        listed = await engine.handle(req(Command.LABELS))
        assert "woodpecker" in listed.text and "foghorn" in listed.text
        reply = await engine.handle(req(Command.ADD, audio=(ref(sounds["click"]),)))
        assert reply.added is not None and sorted(reply.added.tags) == ["foghorn", "woodpecker"]
        assert "Tags: " in reply.text
        row = await engine.store.get_sample(reply.added.sample_id)
        assert row is not None and sorted(row.tags) == ["foghorn", "woodpecker"]
        assert await engine.store.lexical(["s1"], "woodpecker", 5) == [reply.added.sample_id]
        refused = await engine.handle(req(Command.LABELS, "remove foghorn"))
        assert refused.kind == ReplyKind.ERROR
        removed = await engine.handle(req(Command.LABELS, "remove foghorn", is_admin=True))
        assert removed.kind == ReplyKind.TEXT and await engine.store.space_labels("s1") == ["woodpecker"]


async def test_two_processes_on_one_library_stay_in_step(config: Config, sounds: dict[str, Path]) -> None:
    """Like `shira index` filling a library while `shira run` serves it: each sees the other's changes."""
    async with Engine.open(config, warm_labels=False) as server, Engine.open(config, warm_labels=False) as importer:
        mine = await server.ingest.add("lib", sounds["tone"].read_bytes(), "tone.wav")
        theirs = await importer.ingest.add("lib", sounds["noise"].read_bytes(), "noise.mp3")
        later = await server.ingest.add("lib", sounds["click"].read_bytes(), "click.wav")  # out of step: caught up
        hits, _ = await server.searcher.search_text(("lib",), "noise", 10)
        assert {h.sample_id for h in hits} == {mine.sample_id, theirs.sample_id, later.sample_id}
        await importer.library.remove("lib", mine.sample_id)
        hits, _ = await server.searcher.search_text(("lib",), "tone", 10)
        assert {h.sample_id for h in hits} == {theirs.sample_id, later.sample_id}
        assert len(server.indexes.get("lib")) == 2 and len(importer.indexes.get("lib")) == 2
    async with Engine.open(config, warm_labels=False) as reopened:
        assert len(reopened.indexes.get("lib")) == 2


async def test_labels_are_changed_by_admins_only_and_capped(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_config(tmp_path / "d", tiny_model_dir, limits={"labels_per_library": 2})
    async with Engine.open(config, model=False) as engine:
        refused = await engine.handle(req(Command.LABELS, "add siren"))
        assert refused.kind == ReplyKind.ERROR and "Only an admin" in refused.text
        assert await engine.store.space_labels("s1") == []
        for label in ("siren", "door slam"):
            assert "Added the label" in (await engine.handle(req(Command.LABELS, f"add {label}", is_admin=True))).text
        again = await engine.handle(req(Command.LABELS, "add siren", is_admin=True))
        assert again.kind == ReplyKind.TEXT and "already has" in again.text
        full = await engine.handle(req(Command.LABELS, "add kettle", is_admin=True))
        assert full.kind == ReplyKind.ERROR and "2 labels" in full.text
        assert await engine.store.space_labels("s1") == ["door slam", "siren"]
        listed = await engine.handle(req(Command.LABELS))  # anyone may look
        assert listed.text == "This library's labels: door slam, siren"


async def test_a_busy_library_is_limited_as_a_whole_and_told_when_to_retry(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(
        tmp_path / "d", tiny_model_dir, limits={"requests_per_minute": 5, "library_requests_per_minute": 8}
    )
    async with Engine.open(config, model=False) as engine:
        asks = [req(Command.STATS, user=f"u{n % 3}") for n in range(80)]  # 80 tenths: the library's whole budget
        assert {(await engine.handle(r)).kind for r in asks} == {ReplyKind.STATS}
        crowded = await engine.handle(req(Command.STATS, user="u9"))
        assert crowded.kind == ReplyKind.BUSY and "very busy" in crowded.text and "try again in" in crowded.text
        elsewhere = await engine.handle(dataclasses.replace(req(Command.STATS, user="u9"), space="s2"))
        assert elsewhere.kind == ReplyKind.STATS  # the user is fine, and so is another library
        free = await engine.handle(req(Command.HELP, user="u9"))
        assert free.kind == ReplyKind.HELP


async def test_a_library_moves_to_a_new_space_key_once(engine: Engine, sounds: dict[str, Path]) -> None:
    ids = await add_all(engine, {k: sounds[k] for k in ("tone", "noise")}, space="telegram:-42")
    before = await engine.handle(Request("telegram", "telegram:-42", "telegram:1", Command.SEARCH, "tone"))
    assert len(before.hits) == 2
    forged = Request("telegram", "telegram:-42", "telegram:1", Command.MOVE, "telegram:-10042")
    assert (await engine.handle(forged)).kind == ReplyKind.ERROR  # only the adapter, for a service message
    sideways = Request("telegram", "telegram:-42", "telegram:1", Command.MOVE, "discord:guild:1", is_admin=True)
    assert (await engine.handle(sideways)).kind == ReplyKind.ERROR  # never onto another platform's library
    move = dataclasses.replace(forged, is_admin=True)
    assert (await engine.handle(move)).text == "Moved 2 sounds from telegram:-42 to telegram:-10042."
    assert (await engine.handle(move)).text == "Moved 0 sounds from telegram:-42 to telegram:-10042."
    after = await engine.handle(Request("telegram", "telegram:-10042", "telegram:1", Command.SEARCH, "tone"))
    assert {h.sample_id for h in after.hits} == set(ids.values())
    assert await engine.store.count("telegram:-42") == 0


async def test_paging_survives_a_restart(config: Config, sounds: dict[str, Path]) -> None:
    async with Engine.open(config) as engine:
        await add_all(engine, sounds)
        first = await engine.handle(req(Command.SEARCH, "noise", k=2))
        assert first.query_id is not None and first.has_more
    async with Engine.open(config) as engine:  # nothing in memory
        second = await engine.handle(req(Command.PAGE, first.query_id, page=1))
        assert second.kind == ReplyKind.RESULTS and second.offset == 2 and second.title == first.title
        assert not {h.sample_id for h in second.hits} & {h.sample_id for h in first.hits}
        elsewhere = await engine.handle(dataclasses.replace(req(Command.PAGE, first.query_id, page=1), space="s2"))
        assert elsewhere.kind == ReplyKind.ERROR  # a query id from another library is refused
