"""CLAP embeddings of audio windows and texts, deterministic and batched."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import SAMPLE_RATE
from core.config import ModelConfig
from core.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """A span of a clip, in samples."""

    start: int
    end: int

    @property
    def seconds(self) -> tuple[float, float]:
        """Start and end in seconds."""
        return self.start / SAMPLE_RATE, self.end / SAMPLE_RATE


def windows(n_samples: int, window_seconds: float, hop_seconds: float) -> list[Window]:
    """Cut a clip into windows: whole if it fits, else consecutive windows, the last one flush with the end."""
    size = int(window_seconds * SAMPLE_RATE)
    hop = max(1, int(hop_seconds * SAMPLE_RATE))
    if n_samples <= size:
        return [Window(0, n_samples)]
    starts = list(range(0, n_samples - size + 1, hop))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return [Window(s, s + size) for s in starts]


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows (or one vector) to float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def pooled(output: Any) -> Any:
    """transformers 5 returns BaseModelOutputWithPooling from get_*_features; older versions a tensor."""
    return getattr(output, "pooler_output", output)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix support (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


LOAD_HELP = (
    "How to fix it:\n"
    "  - if the model is already downloaded, run offline with HF_HUB_OFFLINE=1;\n"
    "  - or point model.id in the config (or --model) at a local directory holding the checkpoint;\n"
    "  - or download it once on a connected machine: hf download {id}\n"
    '    (or: python -c "from transformers import ClapModel, ClapProcessor; '
    "ClapModel.from_pretrained('{id}'); ClapProcessor.from_pretrained('{id}')\")"
)


class Embedder:
    """Owns a CLAP model; call only from the job queue's worker thread."""

    def __init__(self, model: Any, processor: Any, config: ModelConfig, device: str, precision: str) -> None:
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.precision = precision
        self.dim = int(model.config.projection_dim)
        self.logit_scale = float(model.logit_scale_a.detach().exp().item())
        self.fingerprint = self._fingerprint()

    @classmethod
    def load(cls, config: ModelConfig) -> Embedder:
        """Load model and processor through from_pretrained; raise ModelLoadError with a fix on failure."""
        import torch
        from transformers import ClapModel, ClapProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = ClapModel.from_pretrained(config.id)
                processor = ClapProcessor.from_pretrained(config.id)
        except Exception as exc:  # OSError, ValueError, HF hub errors: all mean "can't load"
            raise ModelLoadError(
                f"Could not load the CLAP model {config.id!r}: {exc}\n" + LOAD_HELP.format(id=config.id)
            ) from exc
        if getattr(model.config.audio_config, "enable_fusion", False):
            log.warning("model %s uses fusion; shira feeds it one window at a time", config.id)
        model = model.eval().to(device)
        precision = config.precision
        if precision == "auto":
            precision = "fp32"
        if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
            log.warning("bf16 requested but this CPU has no native bf16; using fp32")
            precision = "fp32"
        if config.quantize_text and device == "cpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.text_model = torch.ao.quantization.quantize_dynamic(
                    model.text_model, {torch.nn.Linear}, dtype=torch.qint8
                )
                model.text_projection = torch.ao.quantization.quantize_dynamic(
                    model.text_projection, {torch.nn.Linear}, dtype=torch.qint8
                )
        log.info("loaded %s on %s (%s, text int8: %s)", config.id, device, precision, config.quantize_text)
        return cls(model, processor, config, device, precision)

    def _fingerprint(self) -> str:
        """A short id of these exact weights, for caches keyed by model."""
        digest = hashlib.sha1(self.model.config.to_json_string().encode())
        for name, tensor in list(self.model.state_dict().items())[:: max(1, len(self.model.state_dict()) // 8)]:
            digest.update(name.encode())
            digest.update(np.float64(tensor.float().sum().item()).tobytes())
        return digest.hexdigest()[:16]

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.precision == "bf16":
            return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        """Embed clips of at most one window each; returns normalised (n, dim) float32."""
        import torch

        out = []
        size = max(1, self.config.batch_size)
        for i in range(0, len(clips), size):
            batch = clips[i : i + size]
            features = self.processor.feature_extractor(
                batch, sampling_rate=SAMPLE_RATE, truncation="rand_trunc", padding="repeatpad", return_tensors="pt"
            )
            with torch.inference_mode(), self._autocast():
                vec = pooled(self.model.get_audio_features(input_features=features["input_features"].to(self.device)))
            out.append(vec.float().cpu().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns normalised (n, dim) float32."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), self._autocast():
            vec = pooled(self.model.get_text_features(**tokens))
        return normalize(vec.float().cpu().numpy())

    def clip_windows(self, samples: np.ndarray) -> tuple[list[Window], list[np.ndarray]]:
        """Split decoded samples into model windows."""
        spans = windows(len(samples), self.config.window_seconds, self.config.hop_seconds)
        return spans, [samples[w.start : w.end] for w in spans]
