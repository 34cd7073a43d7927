"""Train a tiny CLAP that hears: tones by pitch, coloured noises, clicks, chirps and silence, matched to captions.

Work in progress for issue #14: no test uses it yet, because the model it trains does not yet place every sound of
a synthesised programme within one hop (the test that checks it is to come with it).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.tiny_clap import WORDS, build_tiny_clap

log = logging.getLogger(__name__)

SR = 48000
CLIP_SECONDS = 2.0  # the timeline's window: train on what it will hear
CLIPS_PER_CLASS = 24
MIXED = 8  # of those, clips whose first or last 10-40% is another class: a window is named by what fills most of it
STEPS = 200
CLIPS_PER_STEP = 2  # of each class, so every step sees every caption
TEXT_STEPS = 3  # extra text-tower updates per step against the step's audio vectors (text is cheap, audio is not)
LEARNING_RATE = 3e-3
WARMUP = 10
PATCH = 8
EXTRACTOR_SECONDS = 2  # the extractor pads every clip to this; tiny_clap's 10 s would loop each 2 s window 5 times
TEMPLATES = ("{}", "This is a sound of {}.")  # bare, and shira's label prompt

Sound = Callable[[np.random.Generator, int], np.ndarray]


def _sine(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    freq = float(np.exp(rng.uniform(np.log(low), np.log(high))))
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
    "high": (lambda r, n: _sine(r, n, 3000, 9000), "a high tone"),
    "white": (lambda r, n: _coloured(r, n, 0), "white noise"),
    "pink": (lambda r, n: _coloured(r, n, 1), "pink noise"),
    "brown": (lambda r, n: _coloured(r, n, 2), "brown noise"),
    "clicks": (_clicks, "clicks"),
    "chirps": (_chirps, "a chirp"),
    "silence": (_silence, "silence"),
}


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


def captions() -> tuple[list[str], list[int]]:
    """Every caption, and the index (in CLASSES order) of the class each one names."""
    texts, owner = [], []
    for i, (_, phrase) in enumerate(CLASSES.values()):
        for template in TEMPLATES:
            texts.append(template.format(phrase))
            owner.append(i)
    return texts, owner


def _tokenizer(directory: Path, texts: list[str]) -> Any:
    """A byte-level BPE RobertaTokenizer in which every word of tiny_clap's list and the captions is one token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    corpus = " ".join([WORDS, *texts])
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [corpus, corpus.upper(), corpus.title()] * 4,
        vocab_size=1000,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#")]
    # Passed as data: transformers 5 ignores RobertaTokenizerFast(vocab_file=, merges_file=).
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=64)


def _extractor() -> Any:
    """tiny_clap's feature extractor, but padding clips to EXTRACTOR_SECONDS instead of 10 s."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=SR,
        max_length_s=EXTRACTOR_SECONDS,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def _config(base: Any, vocab_size: int) -> Any:
    """tiny_clap's config with a real vocabulary, bigger patches, no patch LayerNorm and wider GELU projections."""
    from transformers import ClapConfig

    text = {**base.text_config.to_dict(), "vocab_size": vocab_size, "projection_hidden_act": "gelu"}
    audio = {
        **base.audio_config.to_dict(),
        "spec_size": 256 if EXTRACTOR_SECONDS > 2 else 128,  # spec_size * (spec_size // 64 mels) must hold the frames
        "patch_size": PATCH,
        "patch_stride": [PATCH, PATCH],
        "enable_patch_layer_norm": False,  # its LayerNorm hides each patch's loudness, which tells noises apart
        "projection_hidden_act": "gelu",  # ReLU units in a 16-wide projection die and collapse classes together
    }
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=32, projection_hidden_act="gelu")


def build_trained_clap(directory: Path, seed: int = 0) -> Path:
    """Train a tiny CLAP contrastively on synthesised sounds; save model and ClapProcessor into directory."""
    import torch
    from transformers import ClapConfig, ClapModel, ClapProcessor

    from core.config import ModelConfig
    from core.embedder import Embedder

    began = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            build_tiny_clap(Path(scratch), seed)
            base = ClapConfig.from_pretrained(scratch)
            extractor = _extractor()
        texts, owner = captions()
        processor = ClapProcessor(feature_extractor=extractor, tokenizer=_tokenizer(directory, texts))
        torch.manual_seed(seed)
        model = ClapModel(_config(base, len(processor.tokenizer)))

        rng = np.random.default_rng(seed)
        clips = [synthesise(name, rng, mixed=i < MIXED) for name in CLASSES for i in range(CLIPS_PER_CLASS)]
        # Embedder's own feature function, so training sees exactly the features shira computes at inference.
        embedder = Embedder(model, processor, ModelConfig(id=str(directory)), "cpu", "fp32", fingerprint="training")
        with torch.no_grad():
            features = torch.cat([embedder.features(clips[i : i + 8]) for i in range(0, len(clips), 8)])
        tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
        log.info("trained clap: %d clips' features in %.1fs", len(clips), time.perf_counter() - began)
        _train(
            model,
            features.view(len(CLASSES), CLIPS_PER_CLASS, *features.shape[1:]),
            tokens["input_ids"],
            tokens["attention_mask"],
            torch.tensor(owner),
            seed,
        )
        model.eval().save_pretrained(directory)
        processor.save_pretrained(directory)
    finally:
        torch.set_num_threads(threads)
    log.info("trained clap in %.1fs", time.perf_counter() - began)
    return directory


def _clip_loss(scale: Any, audio: Any, text: Any, same: Any) -> Any:
    """CLIP's loss both ways, each clip's positives being its class's captions and each caption's its class's clips."""
    import torch.nn.functional as F

    logits = scale * audio @ text.T
    per_audio = -(F.log_softmax(logits, dim=1) * same / same.sum(1, keepdim=True)).sum(1).mean()
    per_text = -(F.log_softmax(logits.T, dim=1) * same.T / same.T.sum(1, keepdim=True)).sum(1).mean()
    return (per_audio + per_text) / 2


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
    same = (clip_class[:, None] == owner[None, :]).float()

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
