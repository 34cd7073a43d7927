"""Typed configuration read from one TOML file, with secrets from the environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_MODEL = "laion/larger_clap_music_and_speech"
MB = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, malformed or has unknown keys."""


@dataclass(frozen=True)
class ModelConfig:
    """Which CLAP checkpoint to load and how to run it."""

    id: str = DEFAULT_MODEL  # hub id or local directory
    device: str = "auto"  # auto, cpu, cuda, mps
    precision: str = "auto"  # auto (bf16 on CPUs with AMX, else fp32), fp32, bf16
    quantize_text: bool = True  # int8 text tower (CPU), kept only if it stays >= 0.999 cosine to fp32
    fused_attention: bool = True  # one fused attention kernel per audio window block
    fast_features: bool = True  # log-mel features in torch, batched (same values as the numpy extractor)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    window_seconds: float = 10.0
    hop_seconds: float = 10.0
    batch_size: int = 8  # audio windows per forward pass


@dataclass(frozen=True)
class AudioConfig:
    """Limits enforced before any decoding or model work."""

    max_add_bytes: int = 50 * MB
    max_query_bytes: int = 20 * MB
    max_add_seconds: float = 600.0
    max_query_seconds: float = 60.0
    decode_timeout_seconds: float = 60.0
    preview_cache_bytes: int = 512 * MB  # playable previews kept on disk; least recently used go first


@dataclass(frozen=True)
class IndexConfig:
    """How each library's FAISS index is built."""

    approximate_above: int = 50_000  # exact search up to this many samples, IVF beyond
    nprobe: int = 32
    ivf_codec: str = "sq8"  # how IVF lists hold vectors: sq8 (8-bit, a quarter of the memory) or flat (float32)
    blas_kernels: str = "auto"  # auto: AVX-512 kernels for faiss's bundled OpenBLAS where it would use SSE3


@dataclass(frozen=True)
class SearchConfig:
    """Ranking, labelling and duplicate detection."""

    k: int = 5
    max_k: int = 50
    hybrid: bool = True  # fuse FTS5 BM25 with vector ranks (reciprocal rank fusion)
    rrf_k: int = 60
    labels: int = 5  # labels shown for "what sound is this?"
    autotags: int = 3  # zero-shot labels stored as tags on add
    autotag_min_score: float = 0.05
    near_duplicate: float = 0.98  # cosine above which an addition is reported as a near copy
    label_prompt: str = "This is a sound of {label}."
    vocabulary: str = "audioset"  # built-in vocabulary; "none" for only the labels spaces add
    global_space: str = "global"


@dataclass(frozen=True)
class QueueConfig:
    """The model's job queue."""

    max_pending: int = 256
    max_batch: int = 16  # texts per forward pass; audio batches use model.batch_size


@dataclass(frozen=True)
class LimitsConfig:
    """Per-user and per-space limits."""

    requests_per_minute: int = 30  # per user; 0 disables
    space_quota: int = 10_000  # samples per space; 0 disables


@dataclass(frozen=True)
class ConsoleConfig:
    """The local console adapter."""

    space: str = "console"
    user: str = "console"


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram adapter (python-telegram-bot)."""

    enabled: bool = False
    token: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    local_mode: bool = False  # a local Bot API server: no 20 MB download limit
    global_library: bool = False
    poll_interval: float = 0.0


@dataclass(frozen=True)
class DiscordConfig:
    """The Discord adapter (discord.py)."""

    enabled: bool = False
    token: str = ""
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = ""  # empty: ask the API
    dev_guild: int = 0  # sync commands to this guild only; 0 syncs globally
    add_role: str = ""  # empty: anyone may /add
    global_library: bool = False
    watch_channels: tuple[int, ...] = ()  # empty: every channel, on mention


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    data_dir: Path = Path("shira-data")
    log_level: str = "INFO"
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)


T = TypeVar("T")


def _section(cls: type[T], raw: Any, where: str) -> T:
    """Build one dataclass section from a TOML table, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{where}] {name} must be true or false")
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, Path):
            value = Path(value)
        values[name] = value
    return cls(**values)


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any), then apply secrets and overrides from the environment."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    base = _section(Config, top, "top level") if top else Config()
    replaced: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name in sections:
            replaced[f.name] = _section(type(getattr(base, f.name)), sections.pop(f.name), f.name)
    if sections:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(sections))}")
    config = dataclasses.replace(base, **replaced)
    if env.get("SHIRA_DISCORD_TOKEN"):
        discord = dataclasses.replace(config.discord, token=env["SHIRA_DISCORD_TOKEN"])
        config = dataclasses.replace(config, discord=discord)
    if env.get("SHIRA_TELEGRAM_TOKEN"):
        telegram = dataclasses.replace(config.telegram, token=env["SHIRA_TELEGRAM_TOKEN"])
        config = dataclasses.replace(config, telegram=telegram)
    if env.get("SHIRA_DATA_DIR"):
        config = dataclasses.replace(config, data_dir=Path(env["SHIRA_DATA_DIR"]))
    if env.get("SHIRA_MODEL"):
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, id=env["SHIRA_MODEL"]))
    return config


def with_overrides(config: Config, data_dir: Path | None = None, model: str | None = None) -> Config:
    """Apply command-line overrides."""
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=Path(data_dir))
    if model is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, id=model))
    return config
