"""Interactive jobs pre-empt a running audio batch at the model's pause points, with unchanged results."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import numpy as np

from core.config import ModelConfig
from core.embedder import Embedder
from core.jobs import HOLD_SECONDS, JobQueue, Priority
from tests.support.sounds import chirp, noise, tone


class PausingModel:
    """A fake model whose audio batches pass one pause point, held at a gate until the test says go."""

    def __init__(self) -> None:
        self.checkpoint = None
        self.events: list[str] = []
        self.reached = threading.Event()
        self.gate = threading.Event()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.events.append("text")
        return np.array([[float(len(t)), 0.0] for t in texts], np.float32)

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        self.events.append("audio start")
        self.reached.set()
        self.gate.wait(5)
        if self.checkpoint is not None:
            self.checkpoint()
        self.events.append("audio end")
        return np.array([[float(c[0]), 1.0] for c in clips], np.float32)


@asynccontextmanager
async def started(model: PausingModel, hold_seconds: float = HOLD_SECONDS) -> AsyncIterator[JobQueue]:
    """A running queue in front of model; at the end its gate opens and the queue stops."""
    queue = JobQueue(model, max_pending=8, text_batch=4, audio_batch=4, hold_seconds=hold_seconds)
    queue.start()
    try:
        yield queue
    finally:
        model.gate.set()
        await queue.stop()


async def test_text_runs_inside_a_running_bulk_batch() -> None:
    model = PausingModel()
    async with started(model) as queue:
        bulk = asyncio.create_task(queue.embed_clips([np.full(4, 7.0, np.float32)], Priority.BULK))
        await asyncio.to_thread(model.reached.wait, 5)
        text = asyncio.create_task(queue.embed_texts(["thunder"]))
        await asyncio.sleep(0.05)  # the text job is queued while the audio batch is held
        model.gate.set()
        text_vectors, bulk_vectors = await asyncio.gather(text, bulk)
    assert model.events == ["audio start", "text", "audio end"]
    assert text_vectors.tolist() == [[7.0, 0.0]] and bulk_vectors.tolist() == [[7.0, 1.0]]


async def test_a_held_request_keeps_a_bulk_batch_at_its_pause_point_until_it_is_answered() -> None:
    model = PausingModel()
    async with started(model, hold_seconds=30.0) as queue:
        with queue.hold():
            bulk = asyncio.create_task(queue.embed_clips([np.full(4, 3.0, np.float32)], Priority.BULK))
            await asyncio.to_thread(model.reached.wait, 5)
            model.gate.set()  # the batch reaches its pause point and waits there
            await asyncio.sleep(0.2)
            assert not bulk.done()
            text_vectors = await queue.embed_texts(["rain"])  # the held request's own work still runs
            await asyncio.sleep(0.1)
            assert not bulk.done() and model.events == ["audio start", "text"]
        bulk_vectors = await asyncio.wait_for(bulk, 5)  # answered: the batch goes on
    assert model.events == ["audio start", "text", "audio end"]
    assert text_vectors.tolist() == [[4.0, 0.0]] and bulk_vectors.tolist() == [[3.0, 1.0]]


async def test_a_hold_never_keeps_a_bulk_batch_longer_than_its_limit() -> None:
    model = PausingModel()
    async with started(model, hold_seconds=0.2) as queue:
        model.gate.set()
        with queue.hold():  # a request that never ends
            bulk = await asyncio.wait_for(queue.embed_clips([np.full(4, 5.0, np.float32)], Priority.BULK), 5)
    assert bulk.tolist() == [[5.0, 1.0]] and model.events == ["audio start", "audio end"]


async def test_nothing_pre_empts_an_interactive_batch() -> None:
    model = PausingModel()
    async with started(model) as queue:
        query = asyncio.create_task(queue.embed_clips([np.full(4, 3.0, np.float32)], Priority.INTERACTIVE))
        await asyncio.to_thread(model.reached.wait, 5)
        text = asyncio.create_task(queue.embed_texts(["rain"]))
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(query, text)
    assert model.events == ["audio start", "audio end", "text"]


async def overtake(
    queue: JobQueue,
    bulk: Callable[[], Awaitable[np.ndarray]],
    urgent: Callable[[], Awaitable[np.ndarray]],
    reached: threading.Event,
    release: threading.Event,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Start the bulk job; once the model is held inside it, queue the urgent one and let go: which finished first,
    and both results."""
    order: list[str] = []

    async def tracked(name: str, job: Awaitable[np.ndarray]) -> np.ndarray:
        result = await job
        order.append(name)
        return result

    queue.start()
    try:
        running = asyncio.create_task(tracked("bulk", bulk()))
        await asyncio.to_thread(reached.wait, 5)
        waiting = asyncio.create_task(tracked("urgent", urgent()))
        await asyncio.sleep(0.05)
        release.set()
        urgent_vectors, bulk_vectors = await asyncio.gather(waiting, running)
    finally:
        release.set()
        await queue.stop()
    return order, urgent_vectors, bulk_vectors


async def test_real_embedder_pauses_mid_batch_and_results_are_unchanged(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", batch_size=4))
    clips = [tone(2.0), noise(1.0), chirp(3.0)]
    expected_audio = embedder.embed_windows(clips)
    expected_text = embedder.embed_texts(["a dog barking"])
    first_layer = next(m for m in embedder.model.audio_model.modules() if type(m).__name__ == "ClapAudioAttention")
    reached, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        if not reached.is_set():
            reached.set()
            release.wait(5)

    handle = first_layer.register_forward_pre_hook(hold)
    queue = JobQueue(embedder, max_pending=8, text_batch=4, audio_batch=4)
    try:
        order, text_vectors, bulk_vectors = await overtake(
            queue,
            lambda: queue.embed_clips(clips, Priority.BULK),
            lambda: queue.embed_texts(["a dog barking"]),
            reached,
            release,
        )
    finally:
        handle.remove()
    assert order == ["urgent", "bulk"]
    assert np.allclose(text_vectors, expected_text, atol=1e-6)
    assert np.allclose(bulk_vectors, expected_audio, atol=1e-6)


def test_a_batch_pauses_after_each_clips_features_before_the_model_runs(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", batch_size=4))
    events: list[str] = []
    embedder.checkpoint = lambda: events.append("pause")
    handle = embedder.model.audio_model.register_forward_pre_hook(lambda *_: events.append("model"))
    try:
        embedder.embed_windows([tone(2.0), noise(1.0), chirp(3.0)])
    finally:
        handle.remove()
    assert events[: events.index("model")] == ["pause"] * 3  # one per clip's features, then the forward pass
    assert events.count("pause") > 6  # and inside it


async def test_a_query_runs_between_the_texts_of_a_long_bulk_text_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    embedder = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    assert embedder.text_onnx is not None
    prompts = [f"This is a sound of label {i}." for i in range(12)]
    expected_bulk, expected_query = embedder.embed_texts(prompts), embedder.embed_texts(["thunder"])
    session, reached, release = embedder.text_onnx.session, threading.Event(), threading.Event()

    class HeldOnce:
        """The runtime's session, holding its first run until the test says go."""

        def run(self, *args: object) -> object:
            if not reached.is_set():
                reached.set()
                release.wait(5)
            return session.run(*args)

    embedder.text_onnx.session = HeldOnce()
    queue = JobQueue(embedder, max_pending=8, text_batch=32, audio_batch=4)
    order, query_vectors, bulk_vectors = await overtake(
        queue,
        lambda: queue.embed_texts(prompts, Priority.BULK),
        lambda: queue.embed_texts(["thunder"]),
        reached,
        release,
    )
    assert order == ["urgent", "bulk"]
    assert np.array_equal(query_vectors, expected_query) and np.array_equal(bulk_vectors, expected_bulk)


def test_fused_attention_pauses_between_the_clips_of_a_batch_with_values_unchanged(tiny_model_dir: Path) -> None:
    embedder = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", batch_size=4))
    clips = [tone(2.0), noise(1.0), chirp(3.0)]
    alone = np.concatenate([embedder.embed_windows([clip]) for clip in clips])
    events: list[str] = []
    with attention_events(embedder, events):
        embedder.checkpoint = lambda: events.append("pause")
        batched = embedder.embed_windows(clips)
    attention_calls = events.count("attention")
    assert attention_calls > 0 and pauses_inside_attention(events) == 2 * attention_calls  # between clips 1-2, 2-3
    assert np.allclose(batched, alone, atol=1e-6)


def test_int8_mlp_runs_a_clip_at_a_time_pausing_between_with_vectors_as_alone(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    embedder = Embedder.load(ModelConfig(id=str(trained_model_dir), precision="int8", batch_size=4), tmp_path)
    assert embedder.precision == "int8"
    clips = [tone(2.0), noise(1.0), chirp(2.0)]
    alone = np.concatenate([embedder.embed_windows([clip]) for clip in clips])
    events: list[str] = []
    blocks = [m for m in embedder.model.audio_model.modules() if type(m).__name__ == "ClapAudioLayer"]
    handles = [b.intermediate.register_forward_pre_hook(lambda *_: events.append("mlp")) for b in blocks]
    handles += [b.intermediate.register_forward_hook(lambda *_: events.append("end")) for b in blocks]
    for dense in [d for b in blocks for d in (b.intermediate.dense, b.output.dense)]:
        handles.append(dense.register_forward_pre_hook(lambda *_: events.append("dense")))
    embedder.checkpoint = lambda: events.append("pause")
    try:
        batched = embedder.embed_windows(clips)
    finally:
        for handle in handles:
            handle.remove()
    calls = " ".join(events).split("mlp ")[1:]
    # Each block's MLP: both dense layers for one clip, a pause, the next clip; the output adds nothing after.
    assert len(calls) == len(blocks) > 0
    assert all(call.startswith("dense dense pause dense dense pause dense dense end") for call in calls)
    assert "dense" not in " ".join(call.split(" end")[1] for call in calls)
    assert np.allclose(batched, alone, atol=1e-6)


def test_a_voice_note_embedded_inside_a_bulk_batchs_attention_leaves_both_vectors_as_alone(
    tiny_model_dir: Path,
) -> None:
    embedder = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", batch_size=4))
    clips, note = [tone(2.0), noise(1.0), chirp(3.0)], tone(1.5, 880.0)
    alone = np.concatenate([embedder.embed_windows([clip]) for clip in clips])
    note_alone = embedder.embed_windows([note])
    events: list[str] = []
    nested: list[np.ndarray] = []

    def urgent() -> None:  # the first pause inside an attention call runs a one-clip batch there
        events.append("pause")
        if not nested and pauses_inside_attention(events):
            nested.append(embedder.embed_windows([note]))

    with attention_events(embedder, events):
        embedder.checkpoint = urgent
        batched = embedder.embed_windows(clips)
    assert len(nested) == 1 and np.allclose(nested[0], note_alone, atol=1e-6)
    assert np.allclose(batched, alone, atol=1e-6)  # the outer batch went on with its own clip count


@contextmanager
def attention_events(embedder: Embedder, events: list[str]) -> Iterator[None]:
    """Log "attention" and "end" around every call of the audio tower's self-attention into events."""
    modules = [m for m in embedder.model.audio_model.modules() if type(m).__name__ == "ClapAudioSelfAttention"]
    handles = [m.register_forward_pre_hook(lambda *_: events.append("attention")) for m in modules]
    handles += [m.register_forward_hook(lambda *_: events.append("end")) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def pauses_inside_attention(events: list[str]) -> int:
    """How many "pause" events came while an attention call was running."""
    depth = inside = 0
    for event in events:
        depth += (event == "attention") - (event == "end")
        inside += event == "pause" and depth > 0
    return inside
