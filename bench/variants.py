"""Each embedder optimisation switched on and off: speed per window and per text, and cosine to plain fp32."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.indexing import LIMITS
from bench.interactive import query_texts
from core.audio import decode
from core.config import ModelConfig

log = logging.getLogger(__name__)

# name -> ModelConfig fields; the first is the reference (transformers' own code path in fp32).
VARIANTS: dict[str, dict[str, object]] = {
    "fp32, transformers path, batch 1": dict(
        precision="fp32",
        fused_attention=False,
        fast_features=False,
        batch_size=1,
        quantize_text=False,
        text_runtime="torch",
    ),
    "fp32 + torch mel + fused attention, batch 8": dict(
        precision="fp32", batch_size=8, quantize_text=False, text_runtime="torch"
    ),
    "bf16 (AMX or AVX512-BF16) + torch mel + fused attention, batch 1, bf16 text": dict(
        precision="bf16", batch_size=1, quantize_text=False, text_runtime="torch"
    ),
    "bf16 (AMX or AVX512-BF16) + torch mel + fused attention, batch 8, bf16 text": dict(
        precision="bf16", batch_size=8, quantize_text=False, text_runtime="torch"
    ),
    "int8 audio (dynamic, per clip) + torch mel + fused attention, batch 1": dict(
        precision="int8", batch_size=1, quantize_text=False, text_runtime="torch"
    ),
    "int8 audio (dynamic, per clip) + torch mel + fused attention, batch 8": dict(
        precision="int8", batch_size=8, quantize_text=False, text_runtime="torch"
    ),
    "int8 text tower on torch (text_runtime = torch), audio as the defaults": dict(text_runtime="torch"),
    "shira defaults (precision auto: bf16 with native bf16, else int8; int8 text; batch 8)": dict(),
}


@dataclass(frozen=True)
class Variant:
    """One configuration's measurements."""

    name: str
    path: str  # what actually ran (a bf16 request on a CPU without native bf16 runs fp32, and says so here)
    audio_ms_per_window: float
    text_ms: float
    audio_cosine_min: float
    text_cosine_min: float
    alone_vs_batch: float


def clips_from(files: list[Path], n: int) -> list[np.ndarray]:
    """The first n corpus files, decoded, cut to one window."""
    return [decode(p.read_bytes(), LIMITS).samples[: 10 * 48000] for p in files[:n]]


def measure(model: str, files: list[Path], n_clips: int, n_texts: int) -> list[Variant]:
    """Load each variant in turn and measure it against the first."""
    from core.embedder import Embedder

    clips = clips_from(files, n_clips)
    texts = query_texts()[:n_texts]
    results = []
    reference_audio = reference_text = None
    for name, fields in VARIANTS.items():
        log.info("variant: %s", name)
        embedder = Embedder.load(ModelConfig(id=model, **fields))  # type: ignore[arg-type]
        embedder.embed_windows(clips[:2])
        embedder.embed_texts(texts[:2])
        best = float("inf")
        audio = np.zeros(0)
        for _ in range(2):
            start = time.perf_counter()
            audio = embedder.embed_windows(clips)
            best = min(best, time.perf_counter() - start)
        text_times, text = [], []
        for t in texts:
            start = time.perf_counter()
            text.append(embedder.embed_texts([t])[0])
            text_times.append(time.perf_counter() - start)
        alone = embedder.embed_windows([clips[1]])[0]
        if reference_audio is None:
            reference_audio, reference_text = audio, np.stack(text)
        results.append(
            Variant(
                name=name,
                path=embedder.path,
                audio_ms_per_window=best / len(clips) * 1000,
                text_ms=float(np.median(text_times) * 1000),
                audio_cosine_min=float(np.min(np.sum(audio * reference_audio, axis=1))),
                text_cosine_min=float(np.min(np.sum(np.stack(text) * reference_text, axis=1))),
                alone_vs_batch=float(alone @ audio[1]),
            )
        )
        del embedder
        gc.collect()
    return results
