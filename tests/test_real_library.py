"""Indexing a mixed folder of real recordings (Debian's lmms-common samples) and synthetic sounds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.importer import import_paths
from core.engine import Engine
from tests.support.sounds import chirp, encode, tone

LMMS = Path("/usr/share/lmms/samples")
# These lmms ".ogg" files are really WAV files holding Vorbis, which ffmpeg has no decoder for.
UNDECODABLE = {"kick04.ogg", "scratch01.ogg", "wind_chimes01.ogg"}

pytestmark = pytest.mark.skipif(not LMMS.is_dir(), reason="needs Debian's lmms-common (.ci/run installs it)")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_mixed_folder_adds_every_decodable_file_once(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(LMMS / "drums", folder / "drums")
    shutil.copytree(LMMS / "effects", folder / "effects")
    encode(tone(1.0, 220), folder / "synthetic_tone.wav")
    encode(chirp(14.0), folder / "synthetic_sweep.mp3")
    (folder / "garbage.flac").write_bytes(b"fLaC" + bytes(500))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    expected_bad = {p.name for p in files if p.name in UNDECODABLE} | {"garbage.flac"}
    assert len(expected_bad) == 4

    report = await import_paths(engine, [folder], "real")
    assert {Path(p).name for p, _ in report.failed} == expected_bad
    assert all("decode" in error for _, error in report.failed)
    assert report.added + report.duplicates == len(files) - len(expected_bad)
    assert await engine.store.count("real") == report.added

    again = await import_paths(engine, [folder], "real")
    assert again.added == 0 and again.duplicates == report.added + report.duplicates

    kick = next(p for p in files if p.name == "kick01.ogg")
    similar, _ = await engine.searcher.search_vector(
        ("real",), (await engine.encoder.embed_query(kick.read_bytes())).vector, "", 3, 0, ""
    )
    assert similar[0].name == "kick01.ogg"
    hits, _ = await engine.searcher.search_text(("real",), "snare", 5)
    assert "snare" in hits[0].name
