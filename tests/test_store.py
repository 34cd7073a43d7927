"""Both stores (SQLite on a real file, PostgreSQL on a real server): schema, transactions, full text, cascades."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import Config
from core.engine import open_store
from core.store import LEXICAL_WINDOW, MIGRATIONS, NewSample, SavedQuery, SqliteStore, Store, fts_query
from tests.support.raw_sql import fetch


def sample(space: str, sha: str, name: str, dim: int = 4, windows: int = 2, **kw: object) -> NewSample:
    rng = np.random.default_rng(int(sha[:6], 16))
    vector = rng.standard_normal(dim).astype(np.float32)
    segs = tuple((i * 10.0, i * 10.0 + 10.0, rng.standard_normal(dim).astype(np.float32)) for i in range(windows))
    fields = dict(uploader="u1", description="", duration=20.0, source="", tags=(("Drum", 0.5, True),))
    fields.update(kw)
    return NewSample(space=space, sha256=sha, ext=".wav", name=name, vector=vector, segments=segs, **fields)  # type: ignore[arg-type]


async def test_sqlite_schema_is_migrated_and_wal(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "shira.db")
    assert await store.schema_version() == len(MIGRATIONS)
    row = await (await store.db.execute("PRAGMA journal_mode")).fetchone()
    assert row is not None and row[0] == "wal"
    assert await store.integrity_ok()
    await store.close()


async def test_reopening_keeps_data_and_version(backend_config: Config) -> None:
    first = await open_store(backend_config)
    sample_id = (await first.add_sample(sample("a", "1" * 64, "kick.wav"))).sample_id
    version = await first.schema_version()  # type: ignore[attr-defined]
    await first.close()
    second = await open_store(backend_config)
    row = await second.get_sample(sample_id)
    assert await second.schema_version() == version > 0  # type: ignore[attr-defined]
    await second.close()
    assert row is not None and row.name == "kick.wav" and row.tags == ("Drum",)


async def test_add_get_segments_vectors(store: Store) -> None:
    new = sample("a", "a" * 64, "kick.wav", description="deep kick")
    change = await store.add_sample(new)
    sample_id = change.sample_id
    assert change.revision == 1 and change.sha256 == "a" * 64
    row = await store.get_sample(sample_id)
    assert row is not None and (row.space, row.sha256, row.description) == ("a", "a" * 64, "deep kick")
    segs = (await store.segments([sample_id]))[sample_id]
    assert [(s, e) for s, e, _ in segs] == [(0.0, 10.0), (10.0, 20.0)]
    assert np.array_equal(segs[1][2], new.segments[1][2])
    ids, vectors = await store.vectors("a")
    assert ids.tolist() == [sample_id] and np.array_equal(vectors[0], new.vector)
    assert await store.find_by_sha("a", "a" * 64) == sample_id
    assert await store.find_by_sha("b", "a" * 64) is None


async def test_samples_needing_a_fingerprint_are_those_without_one_or_with_an_old_version(store: Store) -> None:
    ids = [(await store.add_sample(sample("a", c * 64, f"{c}.wav"))).sample_id for c in "abc"]
    assert [r.id for r in await store.without_fingerprints(10, b"SFP2")] == ids
    assert await store.set_fingerprint(ids[0], b"SFP2 current")
    assert await store.set_fingerprint(ids[1], b"SFP1 older parameters")
    assert [r.id for r in await store.without_fingerprints(10, b"SFP2")] == ids[1:]
    assert [r.id for r in await store.without_fingerprints(1, b"SFP2")] == ids[1:2]
    assert [r.id for r in await store.without_fingerprints(10)] == ids[2:]  # no version asked: only missing ones


async def test_same_file_once_per_space(store: Store) -> None:
    first = await store.add_sample(sample("a", "b" * 64, "x.wav"))
    await store.add_sample(sample("b", "b" * 64, "x.wav"))
    prepared: list[str] = []

    async def prepare(row: NewSample) -> NewSample:
        prepared.append(row.sha256)
        return row

    again = await store.add_sample(sample("a", "b" * 64, "x.wav"), prepare)
    # The second addition of the same file found the first, wrote nothing and never stored its file.
    assert (again.sample_id, again.duplicate, prepared) == (first.sample_id, True, [])
    assert await store.count("a") == 1
    assert len(await store.lexical(["a", "b"], "x", 10)) == 2  # searchable once in each space


async def test_remove_cascades_and_reports_sha_use(store: Store) -> None:
    first = (await store.add_sample(sample("a", "c" * 64, "x.wav"))).sample_id
    second = (await store.add_sample(sample("b", "c" * 64, "x.wav"))).sample_id
    before = await store.revision("a")
    removed = await store.remove_sample(first)
    assert removed is not None and removed.sha256 == "c" * 64 and removed.revision == before + 1
    assert await store.revision("a") == before + 1
    assert await store.sha_in_use("c" * 64)  # still used by space b
    assert await store.segments([first]) == {}
    assert await store.lexical(["a"], "x", 10) == []
    await store.remove_sample(second)
    assert not await store.sha_in_use("c" * 64)
    assert await store.remove_sample(second) is None
    assert await fetch(store, "SELECT count(*) FROM tags") == [(0,)]


async def test_lexical_search_over_names_descriptions_tags(store: Store) -> None:
    thunder = (await store.add_sample(sample("a", "d" * 64, "Thunder_Clap_01.wav"))).sample_id
    rain = (await store.add_sample(sample("a", "e" * 64, "ambience.wav", description="heavy rain on a roof"))).sample_id
    tagged = (await store.add_sample(sample("a", "f" * 64, "x.wav", tags=(("Dog", 0.9, True),)))).sample_id
    await store.add_sample(sample("other", "9" * 64, "thunder.wav"))
    assert await store.lexical(["a"], "thunder", 10) == [thunder]
    assert await store.lexical(["a"], "raining", 10) == [rain]  # porter stemming
    assert await store.lexical(["a"], "dog", 10) == [tagged]
    assert await store.lexical(["a"], '"); DROP TABLE samples; --', 10) == []
    assert len(await store.lexical(["a", "other"], "thunder", 10)) == 2


async def test_lexical_finds_a_space_s_matches_behind_many_better_ones_elsewhere(store: SqliteStore) -> None:
    # More than LEXICAL_WINDOW better matches in another space: the windowed ranking must fall back to all matches.
    for i in range(LEXICAL_WINDOW + 20):
        await store.add_sample(sample("crowd", f"{i + 1:064x}", f"kick_{i}.wav", windows=1, tags=()))
    mine = [
        (
            await store.add_sample(sample("mine", f"{i + 1:064x}", f"pad {i}.wav", description=f"a kick {'x ' * i}"))
        ).sample_id
        for i in range(3)
    ]
    assert await store.lexical(["mine"], "kick", 10) == mine  # the shortest document ranks first, as in BM25
    best = await store.lexical(["crowd", "mine"], "kick", 5)
    assert len(best) == 5 and not set(best) & set(mine)
    assert (await store.lexical(["crowd"], "kick", 300))[:5] == best  # one ranking, however many are asked for


def test_fts_query_quotes_words() -> None:
    assert fts_query("deep kick-drum") == '"deep" OR "kick" OR "drum"'
    assert fts_query("  ?!  ") is None


async def test_text_cache_and_labels(store: Store) -> None:
    await store.cache_texts("m1", {"dog": np.ones(3, np.float32)})
    assert set(await store.cached_texts("m1", ["dog", "cat"])) == {"dog"}
    assert await store.cached_texts("m2", ["dog"]) == {}
    await store.add_space_label("a", "squeaky door")
    assert await store.space_labels("a") == ["squeaky door"]
    assert await store.remove_space_label("a", "squeaky door")
    assert not await store.remove_space_label("a", "squeaky door")


async def test_queries_are_kept_bounded_and_expire(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.store as store_module

    vector = np.arange(4, dtype=np.float32)
    query = SavedQuery(("telegram:1", "global"), vector, "rain", 5, 'Results for "rain"', exclude=3)
    await store.save_query("q1", query)
    kept = await store.load_query("q1")
    assert kept is not None and kept.spaces == query.spaces and np.array_equal(kept.vector, vector)
    assert (kept.text, kept.k, kept.title, kept.exclude) == ("rain", 5, 'Results for "rain"', 3)
    assert await store.load_query("nope") is None

    monkeypatch.setattr(store_module, "QUERY_ROWS", 3)
    monkeypatch.setattr("core.pgstore.QUERY_ROWS", 3)
    for n in range(5):
        await store.save_query(f"n{n}", dataclasses.replace(query, exclude=None))
    rows = await fetch(store, "SELECT id FROM queries ORDER BY created_at")
    assert [r[0] for r in rows] == ["n2", "n3", "n4"]  # the newest few
    assert (await store.load_query("n4")) is not None and (await store.load_query("n4")).exclude is None  # type: ignore[union-attr]

    clock = time.time() + store_module.QUERY_SECONDS + 1
    monkeypatch.setattr(store_module.time, "time", lambda: clock)
    assert await store.load_query("n4") is None  # a week later


async def test_renaming_a_space_moves_or_merges_its_library_once(store: Store) -> None:
    moved = (await store.add_sample(sample("old", "1" * 64, "a.wav"))).sample_id
    await store.add_space_label("old", "siren")
    assert await store.rename_space("old", "new") == 1
    assert await store.count("new") == 1 and await store.count("old") == 0
    assert (await store.get_sample(moved)).space == "new"  # type: ignore[union-attr]
    assert await store.space_labels("new") == ["siren"] and "old" not in await store.spaces()
    assert await store.rename_space("old", "new") == 0  # the second service message changes nothing

    # Someone used the new chat before its library arrived: the two are merged, exact copies kept once.
    await store.add_sample(sample("older", "2" * 64, "b.wav"))
    await store.add_sample(sample("older", "1" * 64, "a copy.wav"))
    await store.add_space_label("older", "siren")
    await store.add_space_label("older", "kettle")
    assert await store.rename_space("older", "new") == 1
    assert await store.count("new") == 2 and "older" not in await store.spaces()
    assert await store.space_labels("new") == ["kettle", "siren"]
    assert await store.lexical(["new"], "copy", 10) == []  # the copy left behind is gone from search too
    assert len(await store.lexical(["new"], "b a", 10)) == 2
    assert not isinstance(store, SqliteStore) or await store.integrity_ok()
