"""The benchmark's offline model has the real laion/larger_clap_music_and_speech architecture (no weights built), a
tokenizer that works, and bench.run keeps the other benchmarks' sections of RESULTS.md."""

from __future__ import annotations

from bench.model import _tokenizer, clap_config
from bench.sections import keep_sections


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


def test_the_bench_tokenizer_frames_and_tells_texts_apart() -> None:
    tokenizer = _tokenizer()
    kick, snare = tokenizer("a dry kick")["input_ids"], tokenizer("a wet snare")["input_ids"]
    assert kick[0] == tokenizer.bos_token_id and kick[-1] == tokenizer.eos_token_id
    assert len(kick) > 3 and kick != snare and tokenizer.unk_token_id not in kick


def test_results_keep_every_other_benchmarks_section() -> None:
    old = (
        "# old\n\n<!-- memory:start -->\nM\n<!-- memory:end -->\n\n<!-- fingerprint:start -->\nF\n"
        "<!-- fingerprint:end -->\n<!-- catchup:start -->\nC\n<!-- catchup:end -->\n"
    )
    new = "# new\n\n<!-- catchup:start -->\nC2\n<!-- catchup:end -->\n"
    kept = keep_sections(old, new)
    assert kept.startswith(new.rstrip("\n"))
    assert "<!-- memory:start -->\nM\n<!-- memory:end -->" in kept
    assert "<!-- fingerprint:start -->\nF\n<!-- fingerprint:end -->" in kept
    assert "C2" in kept and "\nC\n" not in kept and "# old" not in kept
    assert keep_sections("", new) == new
