"""The CLAP embedder through the real from_pretrained path: windows, determinism, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.audio import SAMPLE_RATE
from core.config import ModelConfig
from core.embedder import Embedder, windows
from core.errors import ModelLoadError
from tests.support.sounds import chirp, noise, tone


@pytest.fixture(scope="module")
def embedder(tiny_model_dir: Path) -> Embedder:
    return Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", batch_size=4))


def test_short_clips_are_one_window() -> None:
    assert [(w.start, w.end) for w in windows(5 * SAMPLE_RATE, 10, 10)] == [(0, 5 * SAMPLE_RATE)]
    assert len(windows(10 * SAMPLE_RATE, 10, 10)) == 1


def test_long_clips_become_consecutive_windows_ending_flush() -> None:
    spans = [w.seconds for w in windows(25 * SAMPLE_RATE, 10, 10)]
    assert spans == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    overlapping = [w.seconds for w in windows(20 * SAMPLE_RATE, 10, 5)]
    assert overlapping == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]


def test_vectors_are_normalised_with_the_model_dimension(embedder: Embedder) -> None:
    audio = embedder.embed_windows([tone(2.0), noise(1.0)])
    text = embedder.embed_texts(["thunder", "a dog barking"])
    assert audio.shape == (2, embedder.dim) and text.shape == (2, embedder.dim)
    assert np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert not np.allclose(audio[0], audio[1])


def test_same_clip_alone_or_in_a_batch_gives_the_same_vector(embedder: Embedder) -> None:
    clip = chirp(7.0)
    alone = embedder.embed_windows([clip])[0]
    batched = embedder.embed_windows([noise(3.0), tone(9.0), clip, noise(10.0, seed=3)])[2]
    again = embedder.embed_windows([clip])[0]
    assert float(alone @ batched) >= 0.99999
    assert np.array_equal(alone, again)


def test_over_ten_seconds_is_windowed_not_randomly_cropped(embedder: Embedder) -> None:
    clip = chirp(25.0)
    spans, clips = embedder.clip_windows(clip)
    assert len(spans) == 3 and all(len(c) <= 10 * SAMPLE_RATE for c in clips)
    first = embedder.embed_windows(clips)
    second = embedder.embed_windows(clips)
    assert np.array_equal(first, second)


def test_unloadable_model_explains_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        Embedder.load(ModelConfig(id=str(tmp_path / "no-such-model")))
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "local directory" in message and "download" in message
