"""The CLAP embedder through the real from_pretrained path: windows, determinism, errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.audio import SAMPLE_RATE
from core.cache_file import CacheFile
from core.config import ModelConfig
from core.embedder import INT8_MIN_COSINE, Embedder, quantize_text_tower, windows
from core.errors import ModelLoadError
from core.speedups import (
    BRIEF_SPINS,
    cpu_flags,
    cpu_has_amx,
    cpu_has_bf16,
    on_own_thread,
    onednn_allows,
    resolve_precision,
    vector_isa,
)
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


def test_text_on_one_thread_keeps_the_vectors_and_restores_the_thread_count(tiny_model_dir: Path) -> None:
    import torch

    texts = ["thunder", "a dog barking", "glass breaking"]
    one = Embedder.load(
        ModelConfig(id=str(tiny_model_dir), precision="fp32", quantize_text=False, text_threads=1, text_runtime="torch")
    )
    same = Embedder.load(
        ModelConfig(id=str(tiny_model_dir), precision="fp32", quantize_text=False, text_threads=0, text_runtime="torch")
    )
    before = torch.get_num_threads()
    a, b = one.embed_texts(texts), same.embed_texts(texts)
    assert torch.get_num_threads() == before
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.99999


def test_int8_text_tower_keeps_its_cosine_promise_alone_or_batched(tiny_model_dir: Path) -> None:
    texts = ["thunder", "a dog barking", "glass breaking"]
    torch_text = dict(precision="fp32", text_runtime="torch")
    fp32 = Embedder.load(ModelConfig(id=str(tiny_model_dir), quantize_text=False, **torch_text))  # type: ignore[arg-type]
    int8 = Embedder.load(ModelConfig(id=str(tiny_model_dir), quantize_text=True, **torch_text))  # type: ignore[arg-type]
    assert int8.text_int8 and "text int8" in int8.path and not fp32.text_int8
    batched = int8.embed_texts(texts)
    assert float(np.min(np.sum(batched * fp32.embed_texts(texts), axis=1))) >= INT8_MIN_COSINE
    alone = np.stack([int8.embed_texts([t])[0] for t in texts])
    assert float(np.min(np.sum(batched * alone, axis=1))) >= 0.99999


def test_failed_int8_parity_check_keeps_fp32_with_a_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = Embedder.load(
        ModelConfig(id=str(tiny_model_dir), precision="fp32", quantize_text=False, text_runtime="torch")
    )
    tower = loaded.model.text_model
    before = loaded.embed_texts(["thunder"])
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        kept = quantize_text_tower(loaded.model, loaded.processor.tokenizer, min_cosine=1.5)  # unreachable
    assert not kept and loaded.model.text_model is tower
    assert "int8 text tower kept off" in caplog.text
    assert np.array_equal(loaded.embed_texts(["thunder"]), before)


def _probe_set() -> list[np.ndarray]:
    """Clips of at most one window of the trained test model (2 s), of several lengths."""
    return [tone(2.0, 440.0), tone(1.5, 3000.0), noise(2.0), chirp(1.0), noise(0.7, seed=3)]


def test_int8_audio_keeps_its_cosine_promise_alone_or_batched(trained_model_dir: Path, tmp_path: Path) -> None:
    config = ModelConfig(id=str(trained_model_dir), precision="int8", batch_size=4)
    int8 = Embedder.load(config, tmp_path)
    fp32 = Embedder.load(ModelConfig(id=str(trained_model_dir), precision="fp32", batch_size=4))
    assert int8.precision == "int8" and int8.path.startswith("audio int8")
    clips = _probe_set()
    batched, reference = int8.embed_windows(clips), fp32.embed_windows(clips)
    assert float(np.min(np.sum(batched * reference, axis=1))) >= INT8_MIN_COSINE
    assert not np.array_equal(batched, reference)  # int8 really ran
    alone = np.stack([int8.embed_windows([c])[0] for c in clips])
    assert float(np.min(np.sum(batched * alone, axis=1))) >= 0.99999
    # The check is remembered: a second start neither re-embeds the probes nor gives other vectors.
    assert "audio-int8/" in (tmp_path / "parity.json").read_text()
    again = Embedder.load(config, tmp_path)
    assert again.precision == "int8" and np.array_equal(again.embed_windows(clips), batched)


def test_failed_int8_audio_check_keeps_fp32_with_a_warning(
    trained_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = Embedder.load(ModelConfig(id=str(trained_model_dir), precision="fp32", batch_size=4))
    before = loaded.embed_windows(_probe_set())
    cache = CacheFile(tmp_path / "parity.json")
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        kept = loaded.quantize_audio(cache, min_cosine=1.5)  # unreachable
    assert not kept and "int8 audio tower kept off" in caplog.text
    assert np.array_equal(loaded.embed_windows(_probe_set()), before)  # every fp32 layer is back
    # A remembered failure is not measured again: the next start goes straight to fp32.
    caplog.clear()
    config = ModelConfig(id=str(trained_model_dir), precision="int8", batch_size=4)
    bad = json.loads(cache.path.read_text())  # type: ignore[union-attr]
    (tmp_path / "parity.json").write_text(json.dumps({k: 0.5 for k in bad}))
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        fallen = Embedder.load(config, tmp_path)
    assert fallen.precision == "fp32" and "0.50000 < 0.999" in caplog.text
    assert np.array_equal(fallen.embed_windows(_probe_set()), before)


def test_an_unreadable_cache_file_means_measure_again(tmp_path: Path) -> None:
    path = tmp_path / "parity.json"
    path.write_text("{not json")
    cache = CacheFile(path)
    assert cache.get("x") is None and cache.number("x") is None
    cache.put("x", 0.9995)
    cache.put("y", "not a number")
    again = CacheFile(path)
    assert again.number("x") == 0.9995 and again.number("y") is None and again.get("y") == "not a number"
    assert not list(tmp_path.glob(".parity-*"))
    assert CacheFile(tmp_path / "blocked" / "x.json").get("x") is None


def test_amx_is_used_only_where_onednn_may_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not onednn_allows("AVX512_CORE_AMX") and onednn_allows("AVX2")
    assert not cpu_has_amx() and not cpu_has_bf16()
    assert resolve_precision("auto", "cpu") == "int8" and resolve_precision("bf16", "cpu") == "fp32"
    assert vector_isa() in ("AVX2", "pre-AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert onednn_allows("AVX512_CORE_AMX") and onednn_allows("AVX512_CORE_BF16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_has_amx() == ("amx_bf16" in cpu_flags())


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # a cap set outside would hide every flag below
    for flags, want in (({"avx2", "avx512f"}, "int8"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")):
        monkeypatch.setattr("core.speedups.cpu_flags", lambda flags=flags: flags)
        assert resolve_precision("auto", "cpu") == want, flags
        assert resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr("core.speedups.cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert vector_isa() == "AVX512-BF16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # below AVX512_CORE_BF16
    assert resolve_precision("auto", "cpu") == "int8"
    assert resolve_precision("int8", "cuda") == "fp32" and resolve_precision("fp32", "cpu") == "fp32"
    assert vector_isa() == "AVX-512"


def test_openmp_wait_policy_is_set_before_torch_and_never_overrides_the_environment() -> None:
    def run(policy: str, **extra: str) -> list[str]:
        code = (
            f"import os, sys; from core.speedups import use_openmp_wait; use_openmp_wait({policy!r}); "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | extra
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert run("passive") == ["PASSIVE", "None", "False"]
    assert run("brief") == ["None", str(BRIEF_SPINS), "False"]
    assert run("default") == ["None", "None", "False"]
    assert run("passive", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None", "False"]
    assert run("brief", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None", "False"]
    assert run("brief", GOMP_SPINCOUNT="7") == ["None", "7", "False"]


async def test_on_own_thread_returns_raises_and_leaves_no_thread_behind() -> None:
    where: list[threading.Thread] = []

    def work(x: int) -> int:
        where.append(threading.current_thread())
        if x < 0:
            raise ValueError("negative")
        return 2 * x

    assert await on_own_thread(work, 21) == 42
    with pytest.raises(ValueError, match="negative"):
        await on_own_thread(work, -1)
    assert where[0] is not where[1] and threading.current_thread() not in where
    for thread in where:  # each ended with its work, so its OpenMP team (if any) went with it
        thread.join(5)
        assert not thread.is_alive()
