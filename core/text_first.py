"""Text first: answer texts from the cached ONNX text tower at once while torch and the full model load behind.

The first start exports the text tower and records the checkpoint here; later starts with the same checkpoint
files, library versions and CPU skip importing torch and transformers before the first answer (seconds). Audio
waits for the full model; while it waits, the text jobs queued meanwhile still run (the queue's `meanwhile`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.cache_file import CacheFile
from core.config import ModelConfig
from core.embedder import INT8_MIN_COSINE, Embedder, normalize
from core.jobs import ModelInfo
from core.onnx_text import OnnxText, cached_path, known_checkpoint, parity_key, runtime_version, text_tokenizer

log = logging.getLogger(__name__)

WAIT_STEP = 0.02  # seconds between looks for text jobs while audio waits for the model


def open_text_first(config: ModelConfig, checkpoint: Path, cache_dir: Path) -> tuple[OnnxText, ModelInfo] | None:
    """The cached ONNX text tower and the model's facts, when an earlier start exported and checked them here."""
    if config.text_runtime != "onnx" or config.device not in ("auto", "cpu") or runtime_version() is None:
        return None
    if config.device == "auto" and Path("/dev/nvidia0").exists():
        return None  # torch may pick CUDA, where the ONNX text tower is not used
    info = known_checkpoint(cache_dir, checkpoint)
    if info is None:
        return None
    cosine = CacheFile(cache_dir / "parity.json").number(parity_key(info.fingerprint))
    path = cached_path(cache_dir, info.fingerprint)
    if cosine is None or cosine < INT8_MIN_COSINE or not path.exists():
        return None
    try:
        threads = config.text_threads or config.threads or available_cpus()
        runtime = OnnxText(path, text_tokenizer(checkpoint), threads)
    except Exception as exc:  # a damaged export: the full load exports it again
        log.warning("the cached ONNX text tower would not open (%s); loading the full model first", exc)
        return None
    return runtime, info


def available_cpus() -> int:
    """The CPUs this process may use (without importing torch, whose default may count physical cores only)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class TextFirst:
    """A Model for the job queue: texts on the ONNX tower from the start, audio once the full model is loaded."""

    def __init__(self, text: OnnxText, info: ModelInfo, load: Callable[[OnnxText], Embedder]) -> None:
        self.text = text
        self.info = info
        self.checkpoint: Callable[[], None] | None = None  # set by the job queue: urgent work inside audio batches
        self.meanwhile: Callable[[], None] | None = None  # set by the job queue: runs queued texts
        self._load = load
        self._loaded = threading.Event()
        self._model: Embedder | None = None
        self._error: Exception | None = None
        self.started = time.perf_counter()
        threading.Thread(target=self._load_model, name="shira-model-load", daemon=True).start()

    def _load_model(self) -> None:
        try:
            model = self._load(self.text)
            if model.fingerprint != self.info.fingerprint:
                raise RuntimeError("the model's files changed while shira started; please restart it")
            self._model = model
            log.info("full model ready %.1f s after text", time.perf_counter() - self.started)
        except Exception as exc:  # every audio job gets it; texts go on
            log.error("the model failed to load: %s", exc)
            self._error = exc
        finally:
            self._loaded.set()

    @property
    def path(self) -> str:
        """Which kernels serve (see Embedder.path)."""
        return self._model.path if self._model is not None else "text int8 on ONNX Runtime (audio loading)"

    def settle(self, timeout: float) -> bool:
        """Wait up to timeout for the load to end either way (a process must not exit in the middle of it)."""
        return self._loaded.wait(timeout)

    def problem(self) -> str | None:
        """Why audio can't be served, or None."""
        return f"the model failed to load: {self._error}" if self._error is not None else None

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts on the ONNX tower, exactly as Embedder.embed_texts serves them."""
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        return normalize(self.text.embed(texts, self.checkpoint))

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        """Audio, after waiting for the full model; text jobs queued meanwhile still run."""
        while not self._loaded.wait(WAIT_STEP):
            if self.meanwhile is not None:
                self.meanwhile()
        model = self._model
        if model is None:
            raise self._error or RuntimeError("the model failed to load")
        model.checkpoint = self.checkpoint
        return model.embed_windows(clips)
