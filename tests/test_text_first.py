"""Text first: a restart answers texts from the cached ONNX text tower while the full model is still loading."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import Config
from core.embedder import Embedder
from core.encoder import Encoder
from core.errors import ModelLoadError
from core.jobs import Priority
from core.store import SqliteStore
from tests.conftest import make_config
from tests.support.sounds import tone

pytestmark = pytest.mark.timeout(120)

CLIP = tone(2.0, 880.0)


@asynccontextmanager
async def started(config: Config) -> AsyncIterator[Encoder]:
    store = await SqliteStore.open(Path(config.data_dir) / "shira.db")
    encoder = Encoder(config, store)
    try:
        await encoder.start()
        yield encoder
    finally:
        await encoder.stop()
        await store.close()


async def first_start(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """A first start (it exports the text tower); its vectors for a text and a clip."""
    async with started(config) as encoder:
        assert encoder.text_first is None
        assert encoder.queue is not None
        return await encoder.embed_text("a dog barking"), await encoder.queue.embed_clips([CLIP], Priority.ADD)


@pytest.fixture
async def restart(tmp_path: Path, tiny_model_dir: Path) -> tuple[Config, np.ndarray, np.ndarray]:
    """A config whose data directory has seen a first start, and that start's text and clip vectors."""
    config = make_config(tmp_path / "data", tiny_model_dir)
    return (config, *await first_start(config))


def gated_load(monkeypatch: pytest.MonkeyPatch, gate: threading.Event, then: Callable[..., Any] | None = None) -> None:
    """Embedder.load waits for gate, then loads (or runs then instead)."""
    real = Embedder.load

    def load(cls: type[Embedder], *args: Any, **kwargs: Any) -> Embedder:
        assert gate.wait(60)
        return then() if then is not None else real(*args, **kwargs)

    monkeypatch.setattr(Embedder, "load", classmethod(load))


async def test_a_restart_answers_texts_while_the_model_loads_and_audio_waits_for_it(
    restart: tuple[Config, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, text, audio = restart
    gate = threading.Event()
    gated_load(monkeypatch, gate)
    async with started(config) as encoder:
        assert encoder.text_first is not None and encoder.queue is not None
        assert np.array_equal(await encoder.embed_text("a dog barking"), text)  # the same export, the same vector
        waiting = asyncio.create_task(encoder.queue.embed_clips([CLIP], Priority.INTERACTIVE))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        thunder = await asyncio.wait_for(encoder.embed_text("thunder"), 10)  # not stuck behind the audio
        assert thunder.shape == text.shape and not waiting.done()
        gate.set()
        later = await asyncio.wait_for(waiting, 60)
        assert float(later[0] @ audio[0]) >= 0.99999
        assert "ONNX Runtime" in encoder.text_first.path and encoder.problem() is None


async def test_a_model_that_fails_behind_the_texts_fails_audio_and_says_so(
    restart: tuple[Config, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, text, _ = restart
    gate = threading.Event()

    def broken() -> Embedder:
        raise ModelLoadError("the checkpoint is unreadable")

    gated_load(monkeypatch, gate, broken)
    async with started(config) as encoder:
        assert encoder.queue is not None and encoder.text_first is not None
        waiting = asyncio.create_task(encoder.queue.embed_clips([CLIP], Priority.INTERACTIVE))
        gate.set()
        with pytest.raises(ModelLoadError, match="unreadable"):
            await asyncio.wait_for(waiting, 30)
        assert "the model failed to load" in (encoder.problem() or "")
        assert np.array_equal(await encoder.embed_text("a dog barking"), text)  # texts go on


async def test_a_replaced_checkpoint_is_loaded_first_not_trusted(tmp_path: Path, tiny_model_dir: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = make_config(tmp_path / "data", model_dir)
    text, _ = await first_start(config)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    async with started(config) as encoder:
        assert encoder.text_first is None  # another identity: loaded in full first, as on a first start
        assert np.array_equal(await encoder.embed_text("a dog barking"), text)
    async with started(config) as encoder:  # and recorded again
        assert encoder.text_first is not None


async def test_stopping_while_the_model_loads_waits_for_the_load(
    restart: tuple[Config, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = restart[0]
    gate = threading.Event()
    gated_load(monkeypatch, gate)
    async with started(config) as encoder:
        early = encoder.text_first
        assert early is not None
        threading.Timer(0.5, gate.set).start()
    assert early.settle(0) and early.problem() is None  # stop() returned only after the load had ended
