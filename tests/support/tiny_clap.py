"""Build a tiny, randomly initialised CLAP checkpoint offline, loadable with from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = (
    "a the of sound this is thunder rain storm wind water dog bark cat meow bird song piano guitar drum kick "
    "snare hat cymbal bell tone beep click noise hiss chirp siren speech voice music engine car train door "
    "knock clap laugh cough whistle glass break explosion fire crackle silence sine wave pink white low high"
)
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0-4, as ClapTextConfig expects


def bpe_tokenizer(corpus: str, vocab_size: int) -> Any:
    """A byte-level BPE RobertaTokenizer trained on corpus (in lower, upper and title case)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [corpus, corpus.upper(), corpus.title()] * 4,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    model = json.loads(bpe.to_str())["model"]
    merges: Any = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]  # pairs
    # Passed as data: transformers 5 ignores RobertaTokenizerFast(vocab_file=, merges_file=) and keeps only the
    # five special tokens, so every text became the same two ids.
    return RobertaTokenizer(vocab=model["vocab"], merges=merges, model_max_length=64)


def build_tiny_clap(directory: Path, seed: int = 0) -> Path:
    """Save a tiny CLAP model, feature extractor and trained BPE tokenizer into directory."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = bpe_tokenizer(WORDS, vocab_size=400)
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, truncation="rand_trunc", padding="repeatpad")
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=72,
        ),
        audio_config=dict(
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            hidden_size=32,
            window_size=8,
            spec_size=256,
            num_mel_bins=64,
            enable_fusion=False,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(directory)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory
