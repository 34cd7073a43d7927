"""Train a tiny CLAP that hears: tones by pitch, coloured noises, clicks, chirps and silence, matched to captions.

Trained in-process on one thread from fixed seeds (the same weights every run), on 2 s clips (the timeline's window),
then saved with save_pretrained and loaded like any checkpoint. tests/test_hearing.py checks what it hears.

Known weak spot: pitch. Seed 0 (the tests' seed) ranks and labels high against low tones, but its "a high tone" also
scores above threshold on low tones in a timeline; seeds 1 and 2 of this recipe confuse pitch outright.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.tiny_clap import WORDS, bpe_tokenizer

log = logging.getLogger(__name__)

SR = 48000
CLIP_SECONDS = 2.0  # the timeline's window: train on what it will hear
CLIPS_PER_CLASS = 24
MIXED = 8  # of those, clips whose first or last 10-40% is another class: a window is named by what fills most of it
STEPS = 250
CLIPS_PER_STEP = 2  # of each class, so every step sees every caption
TEXT_STEPS = 1  # extra text-tower updates per step against the step's audio vectors
LEARNING_RATE = 3e-3
WARMUP = 10
PATCH = 8
BIN = SR / 1024  # the feature extractor's FFT bin spacing, in Hz
WRONG_BELOW = -0.1  # a caption's similarity to a clip it doesn't name is pushed below this
NEUTRAL_WEIGHT = 0.5  # of the loss keeping never-heard captions neutral
WRONG_WEIGHT = 1.0  # of the loss keeping captions below WRONG_BELOW on what they don't name
LOGIT_SCALE = 30.0  # initial; CLAP's 14 leaves wrong captions too close to right ones in a short training
TEMPLATES = ("{}", "This is a sound of {}.")  # bare, and shira's label prompt

Sound = Callable[[np.random.Generator, int], np.ndarray]


def _sine(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    freq = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    if rng.random() < 0.3:  # on an FFT bin (e.g. 3 kHz), with no spectral leakage: a bare line, still a tone
        freq = max(low, round(freq / BIN) * BIN)
    t = np.arange(n) / SR
    return rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power falling as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum[1:] /= freqs[1:] ** (exponent / 2)
    spectrum[0] = 0
    wave = np.fft.irfft(spectrum, n)
    return rng.uniform(0.05, 0.3) * wave / np.std(wave)


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    wave = np.zeros(n)
    times = np.cumsum(rng.exponential(1 / rng.uniform(2, 12), size=64))
    at = (times[times < n / SR] * SR).astype(int)
    wave[at] = rng.uniform(0.3, 0.9, size=len(at)) * rng.choice([-1, 1], size=len(at))
    return wave


def _chirps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Short rising sweeps, a few a second (a slow 2 s sweep is, within a window, nearly a steady tone)."""
    wave = np.zeros(n)
    at = 0
    while True:
        at += int(rng.uniform(0.1, 0.4) * SR)
        length = int(rng.uniform(0.05, 0.2) * SR)
        if at + length > n:
            return rng.uniform(0.2, 0.6) * wave
        f0, f1 = np.exp(rng.uniform(np.log(300), np.log(1500))), np.exp(rng.uniform(np.log(3000), np.log(10000)))
        t = np.arange(length) / SR
        wave[at : at + length] = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 * SR / (2 * length))) * np.hanning(
            length
        )
        at += length


def _silence(rng: np.random.Generator, n: int) -> np.ndarray:
    return float(rng.choice([0.0, 1e-5, 1e-4])) * rng.standard_normal(n)


# Each class: how to make a clip of it, and the caption that names it.
CLASSES: dict[str, tuple[Sound, str]] = {
    "low": (lambda r, n: _sine(r, n, 60, 250), "a low tone"),
    "mid": (lambda r, n: _sine(r, n, 400, 1200), "a mid tone"),
    "high": (lambda r, n: _sine(r, n, 2000, 10000), "a high tone"),
    "white": (lambda r, n: _coloured(r, n, 0), "white noise"),
    "pink": (lambda r, n: _coloured(r, n, 1), "pink noise"),
    "brown": (lambda r, n: _coloured(r, n, 2), "brown noise"),
    "clicks": (_clicks, "clicks"),
    "chirps": (_chirps, "a chirp"),
    "silence": (_silence, "silence"),
}
# Broader words, each naming every class listed (as "noise" names all three noises).
BROADER: dict[str, tuple[str, ...]] = {
    "a tone": ("low", "mid", "high"),
    "a beep": ("mid", "high"),
    "a hum": ("low",),
    "noise": ("white", "pink", "brown"),
    "hiss": ("white",),
    "rumble": ("brown",),
    "a click": ("clicks",),
    "chirping": ("chirps",),
    "quiet": ("silence",),
}
# Sounds none of these are: captions with no clip, kept neutral (about orthogonal to every clip).
NEGATIVES = ("speech", "music", "an engine", "wind", "water", "a crowd", "a dog barking", "rain", "a bell", "a siren")


def synthesise(name: str, rng: np.random.Generator, seconds: float = CLIP_SECONDS, mixed: bool = False) -> np.ndarray:
    """One random clip of a class, float32 at 48 kHz; mixed: with another class in its first or last 10-40%."""
    n = int(seconds * SR)
    wave = CLASSES[name][0](rng, n)
    if mixed:
        other = str(rng.choice([c for c in CLASSES if c != name]))
        k = int(rng.uniform(0.1, 0.4) * n)
        intruder = CLASSES[other][0](rng, k)
        if rng.random() < 0.5:
            wave[:k] = intruder
        else:
            wave[-k:] = intruder
    return np.clip(wave, -1, 1).astype(np.float32)


def captions() -> tuple[list[str], np.ndarray]:
    """Every caption, and which classes (in CLASSES order) each one names: (texts, classes) 0/1."""
    names = list(CLASSES)
    named: list[tuple[str, tuple[str, ...]]] = [(phrase, (name,)) for name, (_, phrase) in CLASSES.items()]
    named += list(BROADER.items()) + [(text, ()) for text in NEGATIVES]
    texts, owner = [], []
    for phrase, owners in named:
        for template in TEMPLATES:
            texts.append(template.format(phrase))
            owner.append([name in owners for name in names])
    return texts, np.array(owner, dtype=np.float32)


def _extractor() -> Any:
    """tiny_clap's feature extractor, but padding clips to CLIP_SECONDS (the timeline's window) instead of 10 s."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=64, sampling_rate=SR, max_length_s=CLIP_SECONDS, truncation="rand_trunc", padding="repeatpad"
    )


def _config(vocab_size: int) -> Any:
    """tiny_clap's towers with a real vocabulary, 8x8 patches of a 128 spectrogram, and GELU projections."""
    from transformers import ClapConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=72,
        projection_hidden_act="gelu",
    )
    audio = dict(
        patch_embeds_hidden_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        hidden_size=32,
        window_size=8,
        spec_size=128,  # spec_size * (spec_size // 64 mels) holds a 2 s clip's 201 frames
        num_mel_bins=64,
        enable_fusion=False,
        patch_size=PATCH,
        patch_stride=[PATCH, PATCH],
        enable_patch_layer_norm=False,  # its LayerNorm hides each patch's loudness, which tells noises apart
        projection_hidden_act="gelu",  # ReLU units in a narrow projection die and collapse classes together
    )
    return ClapConfig(
        text_config=text,
        audio_config=audio,
        projection_dim=32,
        projection_hidden_act="gelu",
        logit_scale_init_value=LOGIT_SCALE,
    )


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread (deterministic, and fair to a shared machine), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_trained_clap(directory: Path, seed: int = 0) -> Path:
    """Train a tiny CLAP contrastively on synthesised sounds; save model and ClapProcessor into directory."""
    import torch
    from transformers import ClapModel, ClapProcessor

    from core.config import ModelConfig
    from core.embedder import Embedder

    began = time.perf_counter()
    texts, owner = captions()
    tokenizer = bpe_tokenizer(" ".join([WORDS, *texts]), vocab_size=1000)
    processor = ClapProcessor(feature_extractor=_extractor(), tokenizer=tokenizer)
    with _one_thread():
        torch.manual_seed(seed)
        model = ClapModel(_config(len(tokenizer)))
        rng = np.random.default_rng(seed)
        clips = [synthesise(name, rng, mixed=i < MIXED) for name in CLASSES for i in range(CLIPS_PER_CLASS)]
        # Embedder's own feature function, so training sees exactly the features shira computes at inference.
        embedder = Embedder(model, processor, ModelConfig(id=str(directory)), "cpu", "fp32", fingerprint="training")
        with torch.no_grad():
            features = torch.cat([embedder.features(clips[i : i + 8]) for i in range(0, len(clips), 8)])
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        log.info("trained clap: %d clips' features in %.1fs", len(clips), time.perf_counter() - began)
        _train(
            model,
            features.view(len(CLASSES), CLIPS_PER_CLASS, *features.shape[1:]),
            tokens["input_ids"],
            tokens["attention_mask"],
            torch.from_numpy(owner),
            seed,
        )
    directory.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    log.info("trained clap in %.1fs", time.perf_counter() - began)
    return directory


def cached_trained_clap(cache: Path, seed: int = 0) -> Path:
    """The model this recipe trains with this seed: from cache if trained before, else trained into it."""
    import torch
    import transformers

    from tests.support import tiny_clap

    recipe = hashlib.sha256(Path(__file__).read_bytes() + Path(tiny_clap.__file__).read_bytes())
    recipe.update(f"{seed} {torch.__version__} {transformers.__version__} {np.__version__}".encode())
    directory = cache / f"trained-clap-{recipe.hexdigest()[:16]}"
    if (directory / "model.safetensors").exists():
        return directory
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".training-"))
    try:
        build_trained_clap(scratch, seed)
        scratch.rename(directory)  # whole or not at all; another session may have finished first
    except OSError:
        if not (directory / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def _clip_loss(scale: Any, audio: Any, text: Any, same: Any) -> Any:
    """CLIP's loss both ways over the captions that name clips (a clip's positives are the captions naming its
    class, a caption's the clips it names), plus terms placing wrong and never-heard captions."""
    import torch.nn.functional as F

    named = same.sum(0) > 0
    sims = audio @ text.T
    logits, positive = scale * sims[:, named], same[:, named]
    per_audio = -(F.log_softmax(logits, dim=1) * positive / positive.sum(1, keepdim=True)).sum(1).mean()
    per_text = -(F.log_softmax(logits.T, dim=1) * positive.T / positive.T.sum(1, keepdim=True)).sum(1).mean()
    # A timeline scores a label against what else a frame could be: sounds the model never heard stay neutral
    # (about 0), and a caption sits clearly below that on what it doesn't name.
    neutral = sims[:, ~named].square().mean()
    wrong = (F.relu(sims[:, named] - WRONG_BELOW) * (1 - positive)).square().mean()
    return (per_audio + per_text) / 2 + NEUTRAL_WEIGHT * neutral + WRONG_WEIGHT * wrong


def _train(model: Any, features: Any, ids: Any, mask: Any, owner: Any, seed: int) -> None:
    """Class-balanced steps of the CLIP loss, with the text tower also stepped against each step's audio vectors."""
    import torch
    import torch.nn.functional as F

    from core.embedder import pooled

    classes, per_class = features.shape[:2]
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / WARMUP) * 0.5 * (1 + np.cos(np.pi * s / STEPS))
    )
    clip_class = torch.arange(classes).repeat_interleave(CLIPS_PER_STEP)
    same = owner[:, clip_class].T  # (clips, texts)

    def text_vectors() -> Any:
        return F.normalize(pooled(model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)

    model.train()
    for step in range(STEPS):
        picks = torch.stack([torch.randperm(per_class, generator=generator)[:CLIPS_PER_STEP] for _ in range(classes)])
        batch = features[torch.arange(classes)[:, None], picks].flatten(0, 1)
        audio = F.normalize(pooled(model.get_audio_features(input_features=batch)), dim=-1)
        scale = model.logit_scale_a.exp().clamp(max=100)
        loss = _clip_loss(scale, audio, text_vectors(), same)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        fixed, fixed_scale = audio.detach(), scale.detach()
        for _ in range(TEXT_STEPS):  # only the text tower has gradients here, so only it moves
            optimiser.zero_grad()
            _clip_loss(fixed_scale, fixed, text_vectors(), same).backward()
            optimiser.step()
        schedule.step()
        if step % 20 == 0 or step == STEPS - 1:
            log.debug("step %d: loss %.3f", step, loss.item())
