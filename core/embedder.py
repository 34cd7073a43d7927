"""CLAP embeddings of audio windows and texts, deterministic and batched."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import SAMPLE_RATE
from core.cache_file import CacheFile
from core.checkpoint import FIX, locate
from core.config import ModelConfig
from core.errors import ModelLoadError
from core.onnx_text import (
    OnnxText,
    cached_path,
    export,
    parity_key,
    remember_checkpoint,
    runtime_version,
    text_tokenizer,
)
from core.speedups import (
    ClipCount,
    MelFeatures,
    intra_op_threads,
    resolve_precision,
    use_fused_attention,
    use_openmp_wait,
    use_per_clip_linears,
    use_per_clip_mlp,
    use_per_clip_modules,
    vector_isa,
)

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


def weights_fingerprint(model: Any) -> str:
    """A short id of these exact weights, for caches keyed by model."""
    digest = hashlib.sha1(model.config.to_json_string().encode())
    state = model.state_dict()
    for name, tensor in list(state.items())[:: max(1, len(state) // 8)]:
        digest.update(name.encode())
        digest.update(np.float64(tensor.float().sum().item()).tobytes())
    return digest.hexdigest()[:16]


# Texts that check int8 against fp32 on each checkpoint before it is kept.
PROBE_TEXTS = (
    "This is a sound of dog barking.",
    "thunder and heavy rain",
    "a dry kick drum",
    "a man speaking on the phone",
    "piano music in a large hall",
    "glass breaking",
    "an engine idling",
    "This is a sound of birdsong.",
)
INT8_MIN_COSINE = 0.999


def text_reference(model: Any, tokenizer: Any, threads: int = 0) -> np.ndarray:
    """The fp32 torch text tower's normalised vectors of the probe texts."""
    import torch

    tokens = tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="pt")
    tokens = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
    with torch.inference_mode(), intra_op_threads(threads):
        return normalize(pooled(model.get_text_features(**tokens)).float().numpy())


def quantize_text_tower(model: Any, tokenizer: Any, min_cosine: float = INT8_MIN_COSINE, threads: int = 0) -> bool:
    """int8 dynamic quantisation of the text tower, kept only if every probe text stays >= min_cosine to fp32.

    threads: intra-op threads for the probes, as for any text (see ModelConfig.text_threads).
    """
    import torch

    reference = text_reference(model, tokenizer, threads)
    tokens = tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="pt")
    tokens = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
    fp32 = model.text_model, model.text_projection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        model.text_model = torch.ao.quantization.quantize_dynamic(fp32[0], {torch.nn.Linear}, dtype=torch.qint8)
        model.text_projection = torch.ao.quantization.quantize_dynamic(fp32[1], {torch.nn.Linear}, dtype=torch.qint8)
    with torch.inference_mode(), intra_op_threads(threads):
        quantized = normalize(pooled(model.get_text_features(**tokens)).float().numpy())
    worst = float(np.min(np.sum(reference * quantized, axis=1)))
    if worst >= min_cosine:
        return True
    log.warning("int8 text tower kept off: cosine to fp32 %.5f < %.3f on probe texts", worst, min_cosine)
    model.text_model, model.text_projection = fp32
    return False


def onnx_text_tower(
    model: Any,
    tokenizer: Any,
    checkpoint: Path,
    fingerprint: str,
    cache_dir: Path | None,
    threads: int,
    min_cosine: float = INT8_MIN_COSINE,
) -> OnnxText | None:
    """The text tower exported to ONNX Runtime int8 (once per checkpoint, into cache_dir), or None with a warning
    when onnxruntime is missing, the export fails or the probe texts fall below min_cosine to fp32.

    tokenizer: transformers' (for the export and the fp32 reference); the runtime reads the checkpoint's
    tokenizer.json itself, so it can start before transformers is imported (core/text_first.py).
    """
    if runtime_version() is None:
        log.warning("text_runtime = onnx but onnxruntime is not installed; the text tower runs on torch")
        return None
    cache = CacheFile(cache_dir and cache_dir / "parity.json")
    key = parity_key(fingerprint)
    known = cache.number(key)
    if known is not None and known < min_cosine:
        log.warning("ONNX text tower kept off: cosine to fp32 %.5f < %.3f on probe texts", known, min_cosine)
        return None
    with tempfile.TemporaryDirectory(prefix="shira-onnx-") as scratch:  # without a cache_dir, exported per load
        path = cached_path(cache_dir or Path(scratch), fingerprint)
        try:
            runtime = None
            if path.exists():
                try:
                    runtime = OnnxText(path, text_tokenizer(checkpoint), threads)
                except Exception as exc:  # a damaged file: export it again
                    log.warning("the cached ONNX text tower would not open (%s); exporting it again", exc)
                    path.unlink()
            if runtime is None:
                log.info("exporting the text tower to ONNX Runtime (once per checkpoint)")
                export(model, tokenizer, path)
                runtime = OnnxText(path, text_tokenizer(checkpoint), threads)
        except Exception as exc:  # an exporter or runtime fault of any kind: torch still serves
            log.warning("could not run the text tower on ONNX Runtime (%s); it runs on torch", exc)
            return None
    if known is None:
        onnx = normalize(runtime.embed(list(PROBE_TEXTS)))
        worst = float(np.min(np.sum(text_reference(model, tokenizer) * onnx, axis=1)))
        cache.put(key, worst)
        if worst < min_cosine:
            log.warning("ONNX text tower kept off: cosine to fp32 %.5f < %.3f on probe texts", worst, min_cosine)
            return None
    return runtime


def probe_clips(samples: int = 10 * SAMPLE_RATE) -> list[np.ndarray]:
    """Fixed one-window clips that check int8 audio against fp32: a chord in noise, a chirp, clicks, pink noise."""
    rng = np.random.default_rng(20261202)
    t = np.arange(samples) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 4 + 0.05 * rng.standard_normal(len(t))
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 400 * t**2))
    clicks = np.zeros(len(t))
    clicks[:: SAMPLE_RATE // 4] = 0.9
    spectrum = np.fft.rfft(rng.standard_normal(len(t))) / np.sqrt(np.arange(1, len(t) // 2 + 2))
    pink = np.fft.irfft(spectrum, len(t))
    pink *= 0.3 / np.max(np.abs(pink))
    return [np.asarray(x, dtype=np.float32) for x in (chord, chirp, clicks, pink)]


PROBE_VERSION = 1  # bump when probe_clips changes, so remembered checks are redone


# Where a running audio batch may pause for urgent work: after each clip's features, before the patch embedding,
# before and after attention, before either half of the MLP, before each patch merge, and between the clips of
# fused attention and (bf16 and int8, whose linear layers run a clip at a time) of every linear layer.
PAUSE_MODULES = (
    "ClapAudioPatchEmbed",
    "ClapAudioAttention",
    "ClapAudioSelfOutput",
    "ClapAudioIntermediate",
    "ClapAudioOutput",
    "ClapAudioPatchMerging",
)

LOAD_HELP = FIX  # what to do when the checkpoint can't be found or read


class Embedder:
    """Owns a CLAP model; call only from the job queue's worker thread."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        config: ModelConfig,
        device: str,
        precision: str,
        fingerprint: str | None = None,
        logit_scale: float | None = None,
        clip_count: ClipCount | None = None,
        text_int8: bool = False,
        text_onnx: OnnxText | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.config = config
        self.device = device
        self.precision = precision
        self.text_int8 = text_int8  # the int8 text tower passed its parity check and is in use
        self.text_onnx = text_onnx  # the ONNX Runtime int8 text tower, which passed its check, serves texts
        self.dim = int(model.config.projection_dim)
        if logit_scale is None:
            logit_scale = float(model.logit_scale_a.detach().float().exp().item())
        self.logit_scale = logit_scale
        self.fingerprint = fingerprint or weights_fingerprint(model)
        extractor = processor.feature_extractor
        self.mel = MelFeatures(extractor) if config.fast_features and MelFeatures.supports(extractor) else None
        self.checkpoint: Callable[[], None] | None = None  # set by the job queue: runs urgent work mid-batch
        self._in_checkpoint = False
        self._clip_count = clip_count or ClipCount()
        self._clip_count.between = self._pause_point
        self._audio_dtype = next(model.audio_model.parameters()).dtype
        for module in model.audio_model.modules():
            if type(module).__name__ in PAUSE_MODULES:
                module.register_forward_pre_hook(self._pause_point)

    @classmethod
    def load(cls, config: ModelConfig, cache_dir: Path | None = None, text: OnnxText | None = None) -> Embedder:
        """Load model and processor through from_pretrained; raise ModelLoadError with a fix on failure.

        cache_dir: where parity checks of fast paths are remembered (the data directory's), so restarts skip them.
        text: an ONNX text tower already started from that cache (text first, core/text_first.py), to serve texts.
        """
        use_openmp_wait(config.openmp_wait)  # before torch is imported, or too late
        import torch
        from transformers import ClapModel, ClapProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        source = locate(config.id)  # a local directory, the cache, or one download; raises ModelLoadError at once
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = ClapModel.from_pretrained(source, local_files_only=True)
                processor = ClapProcessor.from_pretrained(source, local_files_only=True)
        except Exception as exc:  # OSError, ValueError: all mean "can't load"
            raise ModelLoadError(
                f"Could not load the CLAP model {config.id!r}: {exc}\n" + LOAD_HELP.format(id=config.id)
            ) from exc
        if getattr(model.config.audio_config, "enable_fusion", False):
            log.warning("model %s uses fusion; shira feeds it one window at a time", config.id)
        model = model.eval().to(device)
        precision = resolve_precision(config.precision, device)
        fingerprint = weights_fingerprint(model)  # of the fp32 weights: precision is not a different model
        logit_scale = float(model.logit_scale_a.detach().float().exp().item())
        count = ClipCount()
        if config.fused_attention:
            use_fused_attention(model.audio_model, count)
        if precision != "fp32":  # bf16 and int8 run their linears per clip: so does the MLP between them
            use_per_clip_mlp(model.audio_model, count)
        onnx = text
        if onnx is None and config.text_runtime == "onnx" and device == "cpu":
            threads = config.text_threads or torch.get_num_threads()
            onnx = onnx_text_tower(model, processor.tokenizer, Path(source), fingerprint, cache_dir, threads)
            if onnx is not None and cache_dir is not None:
                remember_checkpoint(cache_dir, Path(source), fingerprint, int(model.config.projection_dim), logit_scale)
        quantized = (
            onnx is None
            and config.quantize_text
            and device == "cpu"
            and quantize_text_tower(model, processor.tokenizer, threads=config.text_threads)
        )
        if precision == "bf16":
            model.audio_model.to(torch.bfloat16)
            model.audio_projection.to(torch.bfloat16)
            use_per_clip_linears([model.audio_model, model.audio_projection], count)
            if not quantized and onnx is None:
                model.text_model.to(torch.bfloat16)
                model.text_projection.to(torch.bfloat16)
        if onnx is not None:  # texts never reach the torch text tower again: give its memory back
            model.text_model = model.text_projection = None
        embedder = cls(
            model, processor, config, device, precision, fingerprint, logit_scale, count, bool(quantized), onnx
        )
        if precision == "int8" and not embedder.quantize_audio(CacheFile(cache_dir and cache_dir / "parity.json")):
            embedder.precision = "fp32"
        log.info(
            "loaded %s on %s (%s, fused attention: %s, torch mel: %s, threads: %d, text threads: %s)",
            config.id,
            device,
            embedder.path,
            config.fused_attention,
            config.fast_features,
            torch.get_num_threads(),
            config.text_threads or "same",
        )
        return embedder

    def quantize_audio(self, cache: CacheFile, min_cosine: float = INT8_MIN_COSINE) -> bool:
        """int8 dynamic quantisation of the audio tower's linears, run per clip; kept only if probe clips stay
        >= min_cosine to fp32 (a check remembered per checkpoint, torch version and CPU, so done once)."""
        import torch

        key = f"audio-int8/{self.fingerprint}/torch {torch.__version__}/{vector_isa()}/probes {PROBE_VERSION}"
        known = cache.number(key)
        if known is not None and known < min_cosine:
            log.warning("int8 audio tower kept off: cosine to fp32 %.5f < %.3f on probe clips", known, min_cosine)
            return False
        probes = probe_clips(int(self.processor.feature_extractor.nb_max_samples)) if known is None else []
        reference = self.embed_windows(probes)
        trees = [self.model.audio_model, self.model.audio_projection]
        originals = [
            (parent, name, child)
            for tree in trees
            for parent in tree.modules()
            for name, child in parent.named_children()
            if type(child) is torch.nn.Linear
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            for tree in trees:
                torch.ao.quantization.quantize_dynamic(tree, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        use_per_clip_modules(trees, torch.ao.nn.quantized.dynamic.Linear, self._clip_count)
        if known is None:
            worst = float(np.min(np.sum(reference * self.embed_windows(probes), axis=1)))
            cache.put(key, worst)
            if worst < min_cosine:
                log.warning("int8 audio tower kept off: cosine to fp32 %.5f < %.3f on probe clips", worst, min_cosine)
                for parent, name, child in originals:
                    setattr(parent, name, child)
                return False
        return True

    @property
    def path(self) -> str:
        """Which kernels serve: e.g. "audio bf16, text int8 (AMX)" (for logs and benchmark tables)."""
        if self.text_onnx is not None:
            text = "int8 on ONNX Runtime"
        else:
            text = "int8" if self.text_int8 else "bf16" if self.precision == "bf16" else "fp32"
        where = vector_isa() if self.device == "cpu" else self.device
        return f"audio {self.precision}, text {text} ({where})"

    def _pause_point(self, *_: Any) -> None:
        """Between audio layers: let the queue run urgent work (never recursively)."""
        if self.checkpoint is None or self._in_checkpoint:
            return
        self._in_checkpoint = True
        try:
            self.checkpoint()
        finally:
            self._in_checkpoint = False

    def features(self, clips: list[np.ndarray]) -> Any:
        """The model's input features for clips of at most one window each."""
        if self.mel is not None and all(len(c) <= self.mel.max_samples for c in clips):
            return self.mel(clips)
        return self.processor.feature_extractor(
            clips, sampling_rate=SAMPLE_RATE, truncation="rand_trunc", padding="repeatpad", return_tensors="pt"
        )["input_features"]

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        """Embed clips of at most one window each; returns normalised (n, dim) float32."""
        import torch

        out = []
        size = max(1, self.config.batch_size)
        for i in range(0, len(clips), size):
            parts = []
            for clip in clips[i : i + size]:  # a pause point after each clip's features: 5 ms apart, not 40
                parts.append(self.features([clip]))
                self._pause_point()
            features = torch.cat(parts).to(self.device, self._audio_dtype)
            outer, self._clip_count.clips = self._clip_count.clips, len(features)
            try:
                with torch.inference_mode():
                    vec = pooled(self.model.get_audio_features(input_features=features))
            finally:
                self._clip_count.clips = outer  # a nested (preempting) batch restores the outer one's count
            out.append(vec.float().cpu().numpy())
        return normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns normalised (n, dim) float32."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.text_onnx is not None:
            return normalize(self.text_onnx.embed(texts, self._pause_point))
        if self.text_int8 and len(texts) > 1:
            # Dynamic int8 scales activations per batch: one text at a time keeps each vector what it is alone.
            return np.concatenate([self.embed_texts([text]) for text in texts])
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        threads = self.config.text_threads if self.device == "cpu" else 0
        with torch.inference_mode(), intra_op_threads(threads):
            vec = pooled(self.model.get_text_features(**tokens))
        return normalize(vec.float().cpu().numpy())

    def clip_windows(self, samples: np.ndarray) -> tuple[list[Window], list[np.ndarray]]:
        """Split decoded samples into model windows."""
        spans = windows(len(samples), self.config.window_seconds, self.config.hop_seconds)
        return spans, [samples[w.start : w.end] for w in spans]
