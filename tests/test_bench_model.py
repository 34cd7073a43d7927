"""The benchmark's offline model has the real laion/larger_clap_music_and_speech architecture (no weights built), a
tokenizer that works, bench.run keeps the other benchmarks' sections of RESULTS.md, and the FLOP-bound row holds
fp32 to 1.5x the bound and every other path to under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.flops import FlopBound, gemm_gflops, window_gflop
from bench.model import _tokenizer, clap_config
from bench.report import Row, bound_row
from bench.sections import keep_sections
from bench.variants import Variant
from core.audio import SAMPLE_RATE


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


def _variant(name: str, path: str, ms: float) -> Variant:
    return Variant(name, path, ms, 5.0, 1.0, 1.0, 1.0)


def test_the_flop_bound_row_allows_fp32_half_again_and_other_paths_none() -> None:
    bound = FlopBound(gflop_per_window=30.0, gemm_gflops=200.0, threads=2)
    assert bound.bound_ms == 150.0
    fp32 = _variant("fp32 + torch mel + fused attention, batch 8", "audio fp32, text fp32 (AVX2)", 240.0)

    def row(path: str, ms: float) -> Row:
        return bound_row(bound, [fp32, _variant("shira defaults (...)", path, ms)])

    assert row("audio fp32, text int8 on ONNX Runtime (AVX2)", 224.0).met
    assert not row("audio fp32, text int8 on ONNX Runtime (AVX2)", 226.0).met
    assert row("audio int8, text int8 on ONNX Runtime (AVX2)", 149.0).met
    missed = row("audio bf16, text int8 on ONNX Runtime (AVX512-BF16)", 165.0)
    assert not missed.met and missed.note.startswith("1.10x over")
    assert "**1.10x** the bound" in missed.measured and "fp32 path 240 ms = 1.60x" in missed.measured


def test_a_window_costs_the_same_flops_whatever_it_holds(tiny_model_dir: Path) -> None:
    rate = SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    silence = np.zeros(rate // 2, np.float32)
    counted = window_gflop(str(tiny_model_dir), noise)
    assert counted > 0 and window_gflop(str(tiny_model_dir), silence) == counted
    assert gemm_gflops(size=256, repeats=2) > 0
