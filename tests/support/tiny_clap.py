"""Build a tiny, randomly initialised CLAP checkpoint offline, loadable with from_pretrained."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "a the of sound this is thunder rain storm wind water dog bark cat meow bird song piano guitar drum kick "
    "snare hat cymbal bell tone beep click noise hiss chirp siren speech voice music engine car train door "
    "knock clap laugh cough whistle glass break explosion fire crackle silence sine wave pink white low high"
)


def build_tiny_clap(directory: Path, seed: int = 0) -> Path:
    """Save a tiny CLAP model, feature extractor and trained BPE tokenizer into directory."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [WORDS, WORDS.upper(), WORDS.title()] * 4,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"), model_max_length=64
    )
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
