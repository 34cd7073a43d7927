"""The text tower on ONNX Runtime in int8: exported from the loaded torch model once per checkpoint, then cached."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from core.cache_file import CacheFile
from core.jobs import ModelInfo
from core.speedups import cpu_flags, vector_isa

log = logging.getLogger(__name__)

OPSET = 17
STALE_EXPORT_SECONDS = 3600.0  # a scratch directory this old was left by a killed export (one takes ~20 s)


def runtime_version() -> str | None:
    """onnxruntime's version, or None when it is not installed (read without importing it, or torch)."""
    try:
        return version("onnxruntime")
    except PackageNotFoundError:
        return None


def parity_key(fingerprint: str) -> str:
    """The parity cache's key for this checkpoint's export on this CPU with these library versions."""
    return f"text-onnx-int8/{fingerprint}/torch {version('torch')}/ort {runtime_version()}/{vector_isa()}"


def reduce_range() -> bool:
    """7-bit weights where the CPU lacks VNNI: its u8s8 kernels can saturate with full-range int8 (ORT's advice)."""
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def cached_path(cache_dir: Path, fingerprint: str) -> Path:
    """Where the int8 export of this checkpoint lives (the file name holds what changes its contents)."""
    bits = "r7" if reduce_range() else "r8"
    return cache_dir / "onnx" / fingerprint / f"text-int8-{bits}-torch{version('torch')}-ort{runtime_version()}.onnx"


def text_tokenizer(checkpoint: Path) -> Any:
    """The checkpoint's fast tokenizer from tokenizer.json alone (no transformers): the same ids, truncated as
    transformers truncates them to model_max_length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    settings = checkpoint / "tokenizer_config.json"
    limit = json.loads(settings.read_text(encoding="utf-8")).get("model_max_length", 512) if settings.exists() else 512
    tokenizer.enable_truncation(int(limit) if isinstance(limit, int) and limit < 1_000_000 else 512)
    tokenizer.no_padding()
    return tokenizer


def text_tower(model: Any) -> Any:
    """The torch module to export: input_ids and attention_mask in, the projected (unnormalised) text vector out."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            return getattr(out, "pooler_output", out)

    return TextTower().eval()


def export(model: Any, tokenizer: Any, target: Path) -> None:
    """Export the fp32 text tower, quantise it to int8 and move it to target atomically (a kill leaves no half file)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".export-*"):  # a killed export's fp32 model: hundreds of MB
        if time.time() - stale.stat().st_mtime > STALE_EXPORT_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        tokens = tokenizer(["a dog barking", "rain"], padding=True, return_tensors="pt")
        axes = {"batch": 0, "tokens": 1}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer notices
            torch.onnx.export(
                text_tower(model),
                (tokens["input_ids"], tokens["attention_mask"]),
                str(work / "text.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["vector"],
                dynamic_axes={
                    "input_ids": {v: k for k, v in axes.items()},
                    "attention_mask": {v: k for k, v in axes.items()},
                    "vector": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        root = logging.getLogger()
        quiet, root.disabled = root.disabled, True  # quantize_dynamic logs pre-processing advice on the root logger
        try:
            quantize_dynamic(
                work / "text.onnx",
                work / "text-int8.onnx",
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range(),
            )
        finally:
            root.disabled = quiet
        os.replace(work / "text-int8.onnx", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported the text tower to ONNX int8 in %.1f s: %s", time.perf_counter() - started, target)


class OnnxText:
    """An ONNX Runtime session of the int8 text tower; one text per run, as dynamic int8 scales per call."""

    def __init__(self, path: Path, tokenizer: Any, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # Its threads spin within a run and shortly after: 7.3 ms a text against 10.4 ms with them asleep.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer

    def embed(self, texts: list[str], pause: Callable[[], None] | None = None) -> np.ndarray:
        """Unnormalised (n, dim) float32 vectors, each computed alone; pause() runs between two texts (the job
        queue's checkpoint, so a query need not wait for a long batch of label prompts)."""
        out = []
        for i, text in enumerate(texts):
            if i and pause is not None:
                pause()
            tokens = self.tokenizer.encode(text)
            feed = {
                "input_ids": np.asarray([tokens.ids], dtype=np.int64),
                "attention_mask": np.asarray([tokens.attention_mask], dtype=np.int64),
            }
            out.append(self.session.run(None, feed)[0][0])
        return np.stack(out).astype(np.float32)


def manifest(cache_dir: Path) -> CacheFile:
    """Checkpoint identity -> what the model behind it is (fingerprint, dimension, logit scale)."""
    return CacheFile(cache_dir / "onnx" / "checkpoints.json")


def identity(checkpoint: Path) -> str:
    """The checkpoint's directory and its files' sizes and times: any replaced file gives another identity."""
    parts = [str(checkpoint.resolve())]
    for path in sorted(checkpoint.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".json") and path.is_file():
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def remember_checkpoint(cache_dir: Path, checkpoint: Path, fingerprint: str, dim: int, logit_scale: float) -> None:
    """Record a checkpoint whose text tower is exported, so the next start can serve text before loading it."""
    manifest(cache_dir).put(identity(checkpoint), {"fingerprint": fingerprint, "dim": dim, "logit_scale": logit_scale})


def known_checkpoint(cache_dir: Path, checkpoint: Path) -> ModelInfo | None:
    """What an earlier start learnt of this exact checkpoint, or None."""
    entry = manifest(cache_dir).get(identity(checkpoint))
    try:
        return ModelInfo(str(entry["fingerprint"]), int(entry["dim"]), float(entry["logit_scale"]))
    except (TypeError, KeyError, ValueError):
        return None
