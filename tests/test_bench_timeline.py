"""The timeline benchmark's own pieces: its recordings of real sounds, bounded runs, and its RESULTS.md section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import timeline as bench
from bench.sections import replace_section
from core.audio import SAMPLE_RATE, Limits, decode
from core.config import Config
from core.engine import Engine
from tests.support.sounds import encode, noise, tone

REAL_SOUNDS = bench.LMMS.is_dir() and bench.corpus.ROOT.is_dir()


@pytest.mark.skipif(not REAL_SOUNDS, reason="lmms-common and hydrogen-drumkits are not installed")
def test_a_programme_of_real_sounds_has_the_length_asked_for_and_pauses(tmp_path: Path) -> None:
    from bot.importer import walk

    files = list(walk([bench.LMMS / "misc"]))
    chunks = list(bench.programme(files, 20.0, seed=3))
    samples = np.concatenate(chunks)
    assert len(samples) == 20 * SAMPLE_RATE
    loud = np.abs(samples) > 0.01
    assert 0.05 < loud.mean() < 0.95  # sounds, and pauses between them
    path = bench.encode(chunks, tmp_path / "p.flac", bench.FLAC)
    again = decode(path.read_bytes(), Limits(50 * 2**20, 60.0, 30.0)).samples
    assert abs(len(again) - len(samples)) <= SAMPLE_RATE // 100


def test_the_section_is_replaced_in_place_or_appended() -> None:
    start, end = bench.MARKERS
    body = f"{start}\nnew\n{end}"
    text = f"# head\n\n{start}\nold\n{end}\n\n<!-- memory:start -->\nkept\n<!-- memory:end -->\n"
    assert replace_section(text, body) == text.replace("old", "new")
    assert replace_section("# head\n", body) == f"# head\n\n{body}\n"


def test_rss_slope_is_per_hour_of_audio() -> None:
    flat = {"rss": [[s, 500 * bench.MB] for s in range(0, 600, 30)]}
    rising = {"rss": [[s, (500 + s / 60) * bench.MB] for s in range(0, 600, 30)]}  # 1 MiB a minute
    assert bench.rss_slope(flat) == pytest.approx(0.0, abs=1e-6)
    assert bench.rss_slope(rising) == pytest.approx(60.0)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_bounded_run_stops_early_and_an_unbounded_one_finishes(config: Config, tmp_path: Path) -> None:
    long = encode(np.concatenate([tone(20.0, 300), noise(25.0)]), tmp_path / "long.flac")
    short = encode(tone(6.0, 800), tmp_path / "short.flac")
    async with Engine.open(config) as engine:
        bounded = await bench.timeline_run(engine, long, bound=5.0)
        whole = await bench.timeline_run(engine, short)
    assert not bounded.finished and 5.0 <= bounded.seconds_audio < 45.0
    assert [s for s, _ in bounded.rss] == sorted(s for s, _ in bounded.rss) and bounded.rss[-1][1] > 0
    assert whole.finished and whole.seconds_audio == pytest.approx(6.0, abs=0.05)
    assert whole.speed > 0
