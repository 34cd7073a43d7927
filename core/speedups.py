"""CPU speed-ups for CLAP, each switchable in config: bf16 on AMX or AVX512-BF16, int8 audio and text towers,
fused window attention, batched torch mel features, one intra-op thread for text, and per-clip linears (and MLPs)
that keep bf16 and int8 vectors independent of the batch."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


# oneDNN's ISA names in rising order (ONEDNN_MAX_CPU_ISA caps the kernels torch's bf16 matmuls may use).
ONEDNN_ISAS = (
    "SSE41 AVX AVX2 AVX2_VNNI AVX2_VNNI_2 AVX512_CORE AVX512_CORE_VNNI AVX512_CORE_BF16 AVX10_1_512 AVX512_CORE_FP16 "
    "AVX10_1_512_AMX AVX512_CORE_AMX AVX10_1_512_AMX_FP16 AVX512_CORE_AMX_FP16 AVX10_2_512 AVX10_2_512_AMX_2"
).split()


def onednn_allows(isa: str) -> bool:
    """False when the environment's ONEDNN_MAX_CPU_ISA caps oneDNN below this ISA (one of ONEDNN_ISAS)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap not in ONEDNN_ISAS:  # unset, ALL or DEFAULT: no cap
        return True
    return ONEDNN_ISAS.index(cap) >= ONEDNN_ISAS.index(isa)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix support (AMX or AVX512-BF16) and oneDNN may use it."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags()) and onednn_allows("AVX512_CORE_BF16")


def cpu_has_amx() -> bool:
    """True when the CPU has AMX bf16 tiles that oneDNN may use: there bf16 inference is clearly faster than fp32."""
    return "amx_bf16" in cpu_flags() and onednn_allows("AVX512_CORE_AMX")


def vector_isa() -> str:
    """The widest vector ISA torch's kernels may use here, as named in the results (AMX ... pre-AVX2)."""
    flags = cpu_flags()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if cpu_has_amx():
        return "AMX"
    if cpu_has_bf16():
        return "AVX512-BF16"
    if "avx512f" in flags and onednn_allows("AVX512_CORE") and aten not in ("avx2", "default"):
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "pre-AVX2"


# libgomp spin-waits this many times before a thread sleeps under "brief": about 1.3 ms of a core after the last
# operator (AMX Xeon), against 4.6 ms with libgomp's default of 300,000.
BRIEF_SPINS = 100_000


def use_openmp_wait(policy: str) -> None:
    """Set how torch's and faiss's idle OpenMP threads wait (unless the environment already says); "default"
    leaves libgomp's own choice.

    libgomp reads it once, when the library is first loaded, so this must run before torch or faiss is imported.
    - brief: spin a little (GOMP_SPINCOUNT=BRIEF_SPINS), then sleep. The gaps between a forward pass's operators
      are microseconds, so a team stays awake through a pass; a batch-1 window took 75 ms, as with spinning.
    - passive (OMP_WAIT_POLICY): sleep at once; every operator then wakes the team, and the same window took
      120-150 ms.
    - active, and libgomp's default: spin long after the work ends (4.6 ms of a core per operator by default). On
      a busy machine a team that lost a core to another process then waits out whole time slices at barriers.
    """
    if policy == "default":
        return
    name, value = ("GOMP_SPINCOUNT", str(BRIEF_SPINS)) if policy == "brief" else ("OMP_WAIT_POLICY", policy.upper())
    if "torch" in sys.modules:
        if os.environ.get(name) != value:
            log.info("torch was imported before %s=%s could be set; keeping its setting", name, value)
        return
    if "OMP_WAIT_POLICY" not in os.environ:  # a policy from the environment wins over any of ours
        os.environ.setdefault(name, value)


async def on_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on a new thread that ends with it: for work that runs torch off the model's worker thread.

    Every thread that runs a parallel torch operator keeps an OpenMP team for as long as it lives, and while libgomp
    manages more threads than there are cores it cuts every spin-wait to 100 turns: the worker's team then sleeps
    between operators as if passive (a batch-1 window 120-130 ms instead of 70). asyncio.to_thread's pool threads
    live on, so a model loaded there slowed every later pass.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the caller was cancelled
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # delivered to the caller
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=getattr(fn, "__qualname__", "shira-torch"), daemon=True).start()
    return await done


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with n torch intra-op threads (0: leave as is), then restore the count.

    Call from the thread that runs the model: torch's OpenMP team size is per calling thread.
    """
    import torch

    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_precision(requested: str, device: str) -> str:
    """fp32, bf16 or int8 for the audio tower. "auto" picks bf16 on CPUs with native bf16 (AMX or AVX512-BF16;
    checked, never assumed), else int8 on CPU (which Embedder.load keeps only if it passes its parity check).

    Measured on a 2-core AMD EPYC with AVX512-BF16 and no AMX: the audio tower took 119 ms per window in bf16
    against 250 ms in fp32 (cosine to fp32 0.99997), so native bf16 pays off without AMX too. With AVX2 only,
    bf16 would be emulated and slower; int8 dynamic linears (fbgemm) took 232 against 372 ms on a 2-core AVX2 EPYC.
    """
    if requested not in ("auto", "fp32", "bf16", "int8"):
        raise ModelLoadError(f"model.precision must be auto, fp32, bf16 or int8, not {requested!r}")
    if requested == "auto":
        if device != "cpu":
            return "fp32"
        return "bf16" if cpu_has_bf16() else "int8"
    if requested == "bf16" and device == "cpu" and not cpu_has_bf16():
        log.warning("bf16 requested but no native bf16 is usable here (CPU flags, ONEDNN_MAX_CPU_ISA); using fp32")
        return "fp32"
    if requested == "int8" and device != "cpu":
        log.warning("int8 audio runs on the CPU only; using fp32 on %s", device)
        return "fp32"
    return requested


class MelFeatures:
    """ClapFeatureExtractor's repeatpad log-mel (librosa/slaney filters) in torch.

    Matches the numpy extractor to ~1e-5 dB (float64 throughout); it applies only to clips no longer than the
    extractor's window, which is all the embedder ever passes. One clip per STFT: a batch's float64 temporaries
    (~70 MB for 8 windows) made 8 windows cost 90-370 ms against 8 x 5 ms alone (measured with AMX).
    """

    def __init__(self, extractor: Any) -> None:
        import torch

        self.n_fft = int(extractor.fft_window_size)
        self.hop = int(extractor.hop_length)
        self.max_samples = int(extractor.nb_max_samples)
        self.padding = extractor.padding
        self.window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        self.filters = torch.from_numpy(np.asarray(extractor.mel_filters_slaney, dtype=np.float64)).T.contiguous()

    @staticmethod
    def supports(extractor: Any) -> bool:
        """True for the unfused CLAP checkpoints' settings, which this class reproduces."""
        return (
            getattr(extractor, "truncation", None) == "rand_trunc"
            and getattr(extractor, "padding", None) in ("repeatpad", "repeat", "pad")
            and getattr(extractor, "top_db", None) is None
            and hasattr(extractor, "mel_filters_slaney")
        )

    def _pad(self, clip: np.ndarray) -> Any:
        import torch

        wave = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)).to(torch.float64)
        n, size = self.max_samples, len(wave)
        if 0 < size < n:
            if self.padding == "repeat":
                wave = wave.repeat(n // size + 1)[:n]
            elif self.padding == "repeatpad":
                wave = wave.repeat(n // size)
        return torch.nn.functional.pad(wave, (0, n - len(wave)))

    def __call__(self, clips: list[np.ndarray]) -> Any:
        """(n, 1, frames, mel bins) float32 features, as the extractor's input_features."""
        import torch

        return torch.cat([self._one(clip) for clip in clips])

    def _one(self, clip: np.ndarray) -> Any:
        import torch

        spec = torch.stft(
            self._pad(clip)[None],
            self.n_fft,
            self.hop,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.filters, power).clamp_min(1e-10)
        return (10.0 * torch.log10(mel)).transpose(1, 2).unsqueeze(1).to(torch.float32)


def _window_attention(self: Any, hidden_states: Any, attention_mask: Any = None, output_attentions: Any = False) -> Any:
    """ClapAudioSelfAttention.forward with one fused scaled_dot_product_attention call (bias + shift mask)."""
    import torch

    batch, tokens, _ = hidden_states.shape
    heads, size = self.num_attention_heads, self.attention_head_size
    shape = (batch, tokens, heads, size)
    query = self.query(hidden_states).view(shape).transpose(1, 2)
    key = self.key(hidden_states).view(shape).transpose(1, 2)
    value = self.value(hidden_states).view(shape).transpose(1, 2)
    bias = getattr(self, "_shira_bias", None)
    if bias is None or bias.dtype != query.dtype:
        table = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = table.view(tokens, tokens, -1).permute(2, 0, 1).contiguous().to(query.dtype)
        self._shira_bias = bias
    # One call per clip (windows are batch-major by clip), with the pause point between: the first stage's
    # attention over 8 clips is one 20-30 ms kernel otherwise. Windows are independent, so the values are the same.
    count: ClipCount = self._shira_clips
    clips = count.clips if count.clips > 1 and batch % count.clips == 0 else 1
    step = batch // clips
    mask = bias.unsqueeze(0).expand(step, -1, -1, -1)
    if attention_mask is not None:  # shifted windows: (windows per clip, n, n), clips batch-major
        shifted = bias.unsqueeze(0) + attention_mask.to(query.dtype).unsqueeze(1)
        mask = shifted.repeat(step // attention_mask.shape[0], 1, 1, 1)
    parts = []
    for i in count.indices(clips):
        part = slice(i * step, (i + 1) * step)
        parts.append(torch.nn.functional.scaled_dot_product_attention(query[part], key[part], value[part], mask))
    context = parts[0] if clips == 1 else torch.cat(parts)
    context = context.transpose(1, 2).reshape(batch, tokens, heads * size)
    return (context, None) if output_attentions else (context,)


def use_fused_attention(audio_model: Any, count: ClipCount) -> int:
    """Swap the audio tower's windowed attention for the fused kernel, run a clip at a time of the count.clips a
    batch holds; returns how many modules changed."""
    changed = 0
    for module in audio_model.modules():
        if type(module).__name__ == "ClapAudioSelfAttention":
            module._shira_clips = count
            module.forward = types.MethodType(_window_attention, module)
            changed += 1
    return changed


class ClipCount:
    """How many clips the audio batch being run holds (read by the per-clip layers), and what those layers call
    between one clip and the next: the model's pause point, so urgent work waits for one clip's layer, not eight."""

    def __init__(self) -> None:
        self.clips = 1
        self.between: Callable[[], None] | None = None

    def indices(self, n: int) -> Iterator[int]:
        """0 .. n-1, one clip at a time, with the pause point (if set) between two clips."""
        for i in range(n):
            if i and self.between is not None:
                self.between()
            yield i


def use_per_clip_linears(modules: list[Any], count: ClipCount) -> int:
    """Run each linear layer once per clip, so that a clip's vector never depends on its batch.

    bf16 matrix kernels choose their blocking by row count, so the same rows can round differently in a bigger
    batch; giving every call exactly one clip's rows keeps a file's vector the same alone or batched.
    """
    import torch

    def forward(layer: Any, hidden: Any) -> Any:
        n = count.clips
        if hidden.shape[0] % n:
            return torch.nn.functional.linear(hidden, layer.weight, layer.bias)
        rows = hidden.reshape(n, -1, hidden.shape[-1])  # the audio tower keeps clips batch-major
        out = rows.new_empty((n, rows.shape[1], layer.out_features))
        weight = layer.weight.t()
        for i in count.indices(n):
            if layer.bias is None:
                torch.mm(rows[i], weight, out=out[i])
            else:
                torch.addmm(layer.bias, rows[i], weight, out=out[i])
        return out.reshape(*hidden.shape[:-1], layer.out_features)

    return _rebind(modules, torch.nn.Linear, lambda module: types.MethodType(forward, module))


def use_per_clip_modules(modules: list[Any], kind: type[Any], count: ClipCount) -> int:
    """Run every module of this kind (e.g. int8 dynamic linears) once per clip of the batch, pausing between.

    Dynamic int8 layers scale each call's activations by its own range, so a batch would quantise a clip by its
    neighbours' loudest values; one call per clip keeps a file's vector what it is alone.
    """
    import torch

    def forward(plain: Any, hidden: Any) -> Any:
        n = count.clips
        if n == 1 or hidden.shape[0] % n:
            return plain(hidden)
        parts = hidden.reshape(n, -1, hidden.shape[-1])  # the audio tower keeps clips batch-major
        return torch.cat([plain(parts[i]) for i in count.indices(n)]).reshape(*hidden.shape[:-1], -1)

    return _rebind(modules, kind, lambda module: functools.partial(forward, module.forward))


def use_per_clip_mlp(audio_model: Any, count: ClipCount) -> int:
    """Run each audio block's MLP (dense, GELU, dense) a clip at a time, pausing between; returns how many.

    The per-clip layers would otherwise meet at the wide middle of the MLP: one clip's rows at a time through the
    first dense, then the 4x wider result of all clips joined (a 30 MB copy in the first stage) for one GELU over
    the batch (8-10 ms without a pause point). Measured (8 windows, A/B): int8 7-10% faster per window under AVX2
    caps and natively on AVX-512. Each clip's rows take the path they take alone, so the values are unchanged.
    """
    import torch

    def mlp(inner: Any, outer: Any, hidden: Any) -> Any:
        return outer.dropout(outer.dense(inner.intermediate_act_fn(inner.dense(hidden))))

    def forward(inner: Any, outer: Any, hidden: Any) -> Any:
        n = count.clips
        if n == 1 or hidden.shape[0] % n:
            return mlp(inner, outer, hidden)
        step, parts = hidden.shape[0] // n, []
        count.clips = 1  # the layers inside see one clip, as alone
        try:
            for i in count.indices(n):
                parts.append(mlp(inner, outer, hidden[i * step : (i + 1) * step]))
        finally:
            count.clips = n
        return torch.cat(parts)

    changed = 0
    for module in audio_model.modules():
        if type(module).__name__ == "ClapAudioLayer" and not hasattr(module.intermediate, "_shira_mlp"):
            inner, outer = module.intermediate, module.output
            inner._shira_mlp = True
            inner.forward = functools.partial(forward, inner, outer)
            outer.forward = _unchanged  # the intermediate's forward now runs the output's dense layer too
            changed += 1
    return changed


def _unchanged(hidden: Any) -> Any:
    return hidden


def _rebind(modules: list[Any], kind: type[Any], forward_of: Callable[[Any], Callable[..., Any]]) -> int:
    """Give every module of this kind in these trees the forward that forward_of(module) makes; returns how many."""
    changed = 0
    for tree in modules:
        for module in tree.modules():
            if isinstance(module, kind):
                module.forward = forward_of(module)
                changed += 1
    return changed
