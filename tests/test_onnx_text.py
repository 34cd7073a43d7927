"""The ONNX Runtime int8 text tower: parity to fp32, one export per checkpoint, and a fallback to torch."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import ModelConfig
from core.embedder import INT8_MIN_COSINE, Embedder, onnx_text_tower
from core.onnx_text import STALE_EXPORT_SECONDS, text_tokenizer

TEXTS = ["thunder", "a dog barking", "glass breaking", "This is a sound of a very long and winding sentence."]


def _fp32(model_dir: Path) -> Embedder:
    return Embedder.load(ModelConfig(id=str(model_dir), precision="fp32", quantize_text=False, text_runtime="torch"))


def test_onnx_text_keeps_its_cosine_promise_alone_or_batched(tiny_model_dir: Path, tmp_path: Path) -> None:
    onnx = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    assert onnx.text_onnx is not None and "text int8 on ONNX Runtime" in onnx.path and not onnx.text_int8
    batched, reference = onnx.embed_texts(TEXTS), _fp32(tiny_model_dir).embed_texts(TEXTS)
    assert float(np.min(np.sum(batched * reference, axis=1))) >= INT8_MIN_COSINE
    assert not np.array_equal(batched, reference)  # ONNX Runtime really served them
    alone = np.stack([onnx.embed_texts([t])[0] for t in TEXTS])
    assert np.array_equal(batched, alone)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)


def test_the_export_is_made_once_and_reused_with_its_remembered_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    (export,) = (tmp_path / "onnx").rglob("*.onnx")
    assert export.parent.name == first.fingerprint and not list((tmp_path / "onnx").rglob(".export-*"))
    stamp = export.stat().st_mtime_ns
    assert any(k.startswith("text-onnx-int8/") for k in json.loads((tmp_path / "parity.json").read_text()))
    again = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    assert export.stat().st_mtime_ns == stamp and again.text_onnx is not None
    assert np.array_equal(again.embed_texts(TEXTS), first.embed_texts(TEXTS))


def test_failed_onnx_check_keeps_torch_with_a_warning_and_is_remembered(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = _fp32(tiny_model_dir)
    model, tokenizer = loaded.model, loaded.processor.tokenizer
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        assert (
            onnx_text_tower(model, tokenizer, tiny_model_dir, loaded.fingerprint, tmp_path, 1, min_cosine=1.5) is None
        )
    assert "ONNX text tower kept off" in caplog.text
    parity = tmp_path / "parity.json"
    parity.write_text(json.dumps({k: 0.5 for k in json.loads(parity.read_text())}))  # as if it had measured 0.5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="core.embedder"):  # remembered: not measured again
        fallen = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32", quantize_text=False), tmp_path)
    assert fallen.text_onnx is None and "0.50000 < 0.999" in caplog.text and "ONNX" not in fallen.path
    assert np.array_equal(fallen.embed_texts(TEXTS), loaded.embed_texts(TEXTS))


def test_without_onnxruntime_or_with_a_broken_export_torch_serves(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _fp32(tiny_model_dir).embed_texts(TEXTS)
    config = ModelConfig(id=str(tiny_model_dir), precision="fp32", quantize_text=False)
    monkeypatch.setattr("core.embedder.runtime_version", lambda: None)
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        missing = Embedder.load(config, tmp_path)
    assert missing.text_onnx is None and "onnxruntime is not installed" in caplog.text
    assert np.array_equal(missing.embed_texts(TEXTS), reference)
    monkeypatch.undo()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="core.embedder"):
        broken = Embedder.load(config, blocked)
    assert broken.text_onnx is None and "could not run the text tower on ONNX Runtime" in caplog.text
    assert np.array_equal(broken.embed_texts(TEXTS), reference)


def test_a_half_written_export_is_not_taken_for_a_cached_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    (export,) = (tmp_path / "onnx").rglob("*.onnx")
    leftover, recent = export.parent / ".export-killed", export.parent / ".export-running"
    for scratch in (leftover, recent):
        scratch.mkdir()
        (scratch / "text.onnx").write_bytes(b"half a model")
    hour_ago = time.time() - 2 * STALE_EXPORT_SECONDS
    os.utime(leftover, (hour_ago, hour_ago))
    export.unlink()  # a kill before os.replace leaves only the scratch directory
    again = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    assert again.text_onnx is not None and export.exists()
    assert not leftover.exists() and recent.exists()  # an old one is swept; one that may be running is left
    assert np.array_equal(again.embed_texts(TEXTS), loaded.embed_texts(TEXTS))


@pytest.mark.parametrize("which", ["tiny_model_dir", "trained_model_dir"])
def test_the_runtime_tokenizer_gives_the_ids_and_truncation_of_transformers(
    which: str, request: pytest.FixtureRequest
) -> None:
    from transformers import AutoTokenizer

    checkpoint = Path(request.getfixturevalue(which))
    ours, theirs = text_tokenizer(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    long = " ".join(["thunder and heavy rain on a tin roof"] * 40)
    for text in [*TEXTS, "Ünïcødé — 雷 🎵", "", long]:
        assert ours.encode(text).ids == theirs(text, truncation=True)["input_ids"], text
    assert len(ours.encode(long).ids) == theirs.model_max_length


def test_a_text_longer_than_the_model_reads_is_embedded_truncated(tiny_model_dir: Path, tmp_path: Path) -> None:
    onnx = Embedder.load(ModelConfig(id=str(tiny_model_dir), precision="fp32"), tmp_path)
    reference = _fp32(tiny_model_dir)
    long = " ".join(["a dog barking far away"] * 60)
    assert float(onnx.embed_texts([long])[0] @ reference.embed_texts([long])[0]) >= INT8_MIN_COSINE
