"""The benchmark's offline model has the real laion/larger_clap_music_and_speech architecture (no weights built)."""

from __future__ import annotations

from bench.model import clap_config


def test_bench_model_config_is_the_full_size_architecture() -> None:
    config = clap_config()
    audio, text = config.audio_config, config.text_config
    assert audio.patch_embeds_hidden_size == 128
    assert list(audio.depths) == [2, 2, 12, 2]
    assert list(audio.num_attention_heads) == [4, 8, 16, 32]
    assert audio.hidden_size == 1024 and not audio.enable_fusion
    assert audio.spec_size == 256 and audio.num_mel_bins == 64
    assert (text.vocab_size, text.num_hidden_layers, text.hidden_size, text.max_position_embeddings) == (
        50265,
        12,
        768,
        514,
    )
    assert text.num_attention_heads == 12 and text.intermediate_size == 3072
    assert config.projection_dim == 512
