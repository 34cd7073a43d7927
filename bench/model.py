"""A randomly initialised CLAP with the real laion/larger_clap_music_and_speech architecture, built offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FULL_SIZE_ID = "laion/larger_clap_music_and_speech"
DEFAULT_DIR = Path(__file__).parent / "out" / "larger-clap-random"

# Every architecture field that sets the model's cost, as in the published checkpoint's config.json.
AUDIO_CONFIG: dict[str, Any] = {
    "patch_embeds_hidden_size": 128,
    "depths": [2, 2, 12, 2],
    "num_attention_heads": [4, 8, 16, 32],
    "hidden_size": 1024,
    "window_size": 8,
    "patch_size": 4,
    "patch_stride": [4, 4],
    "spec_size": 256,
    "num_mel_bins": 64,
    "mlp_ratio": 4.0,
    "enable_fusion": False,
    "projection_hidden_act": "relu",
}
TEXT_CONFIG: dict[str, Any] = {  # RoBERTa-base
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "projection_hidden_act": "relu",
}
PROJECTION_DIM = 512
FEATURES: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": 48000,
    "fft_window_size": 1024,
    "hop_length": 480,
    "max_length_s": 10,
    "frequency_min": 50,
    "frequency_max": 14000,
    "truncation": "rand_trunc",
    "padding": "repeatpad",
}
WORDS = (
    "a the of sound this is kick snare hat hihat open closed cymbal crash ride tom floor rack clap rim shot "
    "brush stick drum kit acoustic electronic dry wet room hall reverb loud soft heavy light metal wood skin "
    "thunder rain wind water dog bark bird song piano guitar bass voice speech music engine car door knock "
    "bell tone beep click noise hiss chirp siren laugh whistle glass break fire crackle low high deep bright"
)


def clap_config() -> Any:
    """The full-size ClapConfig (no weights)."""
    from transformers import ClapConfig

    return ClapConfig(text_config=dict(TEXT_CONFIG), audio_config=dict(AUDIO_CONFIG), projection_dim=PROJECTION_DIM)


def _tokenizer() -> Any:
    """A RoBERTa byte-level BPE tokenizer trained in-process on a small vocabulary (ids stay < vocab_size).

    Built from the trained tokenizer object with RoBERTa's <s> ... </s> framing: transformers 5 ignores the
    vocab_file/merges_file arguments, and a tokenizer made from them turned every text into "</s><unk>".
    """
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [WORDS, WORDS.upper(), WORDS.title()] * 8,
        vocab_size=2000,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=512, **special)


def build(directory: Path = DEFAULT_DIR, seed: int = 0) -> Path:
    """Save the random full-size model and its processor into directory, unless it is already there."""
    stamp = directory / "bench-model.json"
    wanted = {
        "tokenizer": 2,
        "seed": seed,
        "audio": AUDIO_CONFIG,
        "text": TEXT_CONFIG,
        "projection_dim": PROJECTION_DIM,
    }
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return directory
    import torch
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor

    directory.mkdir(parents=True, exist_ok=True)
    log.info("building a random %s-architecture model in %s", FULL_SIZE_ID, directory)
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    ClapModel(clap_config()).save_pretrained(directory)
    ClapProcessor(feature_extractor=ClapFeatureExtractor(**FEATURES), tokenizer=tokenizer).save_pretrained(directory)
    stamp.write_text(json.dumps(wanted))
    return directory


def resolve(model: str | None) -> tuple[str, str]:
    """The model id or directory to load and a label for the results: the random full-size model by default."""
    if model:
        return model, model
    return str(build()), f"random-weight {FULL_SIZE_ID} architecture (built offline)"
