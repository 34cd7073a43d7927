"""Typed configuration read from one TOML file, with secrets from the environment, every key checked at load."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

DEFAULT_MODEL = "laion/larger_clap_music_and_speech"
MB = 1024 * 1024
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
SECRET_KEYS = frozenset({"token", "webhook_secret", "postgres_dsn", "redis_url"})  # never repeated in errors
CORE_ENV = {  # environment variable -> key path
    "SHIRA_DATA_DIR": ("data_dir",),
    "SHIRA_MODEL": ("model", "id"),
    "SHIRA_POSTGRES_DSN": ("cluster", "postgres_dsn"),
    "SHIRA_REDIS_URL": ("cluster", "redis_url"),
    "SHIRA_FRONTEND_NAME": ("cluster", "frontend_name"),
}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(ValueError):
    """The configuration file is missing, malformed or has unknown keys or bad values."""


class ServerUnreachable(ConfigError):
    """A server the config names (PostgreSQL, Redis) can't be reached in time; the message names its URL, masked."""


def masked_url(url: str) -> str:
    """A server URL fit for a log or an error: its password replaced by ***."""
    url = re.sub(r"(password\s*=\s*)('[^']*'|[^\s&]+)", r"\1***", url)  # key=value form
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):[^/?#]*@", r"\1:***@", url, flags=re.IGNORECASE)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (any case)")
    return value.upper()


def _label_prompt(value: str) -> str:
    try:
        formatted = value.format(label="\0")
    except (KeyError, IndexError, ValueError):
        raise ValueError("must be a format string whose only field is {label}") from None
    if "\0" not in formatted:
        raise ValueError("must contain {label}")
    return value


def _directory(value: object) -> object:
    if not (isinstance(value, str) and value):
        raise ValueError("must be a non-empty string (a directory)")
    return value


def _postgres_dsn(value: str) -> str:
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be empty or a postgresql:// URL")
    return value


def _redis_url(value: str) -> str:
    if value and not value.startswith(REDIS_SCHEMES):
        raise ValueError(f"must be empty or start with {', '.join(REDIS_SCHEMES)}")
    return value


def _no_whitespace(value: str) -> str:
    if value != "".join(value.split()):
        raise ValueError("must not contain spaces or line breaks")
    return value


# Field types shared by every section; pydantic reads them at load, the dataclasses stay plain.
Bool = StrictBool
Int = StrictInt
Float = StrictFloat  # an int is accepted and stored as a float
Str = StrictStr
Count = Annotated[Int, Field(ge=1)]
Limit = Annotated[Int, Field(ge=0)]  # 0 disables
Seconds = Annotated[Float, Field(gt=0)]
Fraction = Annotated[Float, Field(ge=0, le=1)]
Name = Annotated[Str, Field(min_length=1)]
Url = Annotated[Str, AfterValidator(_http_url)]
Token = Annotated[Str, AfterValidator(_no_whitespace)]
Directory = Annotated[Path, BeforeValidator(_directory)]
LogLevel = Annotated[Str, AfterValidator(_log_level)]
LabelPrompt = Annotated[Str, AfterValidator(_label_prompt)]
PostgresDsn = Annotated[Str, AfterValidator(_postgres_dsn), AfterValidator(_no_whitespace)]
RedisUrl = Annotated[Str, AfterValidator(_redis_url)]

# Every section class sets __pydantic_config__ = SECTION: unknown keys refused, no inf or nan.
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class ModelConfig:
    """Which CLAP checkpoint to load and how to run it."""

    __pydantic_config__ = SECTION

    id: Name = DEFAULT_MODEL  # hub id or local directory
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"  # audio: bf16 with AMX or AVX512-BF16, else int8
    text_runtime: Literal["onnx", "torch"] = "onnx"  # onnx: the text tower exported to ONNX Runtime int8 (CPU)
    quantize_text: Bool = True  # int8 text tower (CPU), kept only if it stays >= 0.999 cosine to fp32
    fused_attention: Bool = True  # one fused attention kernel per audio window block
    fast_features: Bool = True  # log-mel features in torch, one clip per STFT (same values as the numpy extractor)
    threads: Limit = 0  # torch intra-op threads; 0 keeps torch's default
    text_threads: Limit = 0  # intra-op threads for text batches (CPU); 0: the same as audio
    openmp_wait: Literal["brief", "passive", "active", "default"] = "brief"  # how torch's and faiss's threads wait
    window_seconds: Seconds = 10.0
    hop_seconds: Seconds = 10.0  # at most window_seconds, or parts of long clips are never embedded
    batch_size: Count = 8  # audio windows per forward pass


@dataclass(frozen=True)
class AudioConfig:
    """Limits enforced before any decoding or model work."""

    __pydantic_config__ = SECTION

    max_add_bytes: Count = 50 * MB
    max_query_bytes: Count = 20 * MB
    max_add_seconds: Seconds = 600.0
    max_query_seconds: Seconds = 60.0
    decode_timeout_seconds: Seconds = 60.0
    ffmpeg_memory_bytes: Count = 1024 * MB  # address space one ffmpeg run may take (it needs ~250 MB to start)
    preview_cache_bytes: Count = 512 * MB  # playable previews kept on disk; least recently used go first


@dataclass(frozen=True)
class IndexConfig:
    """How each library's FAISS index is built."""

    __pydantic_config__ = SECTION

    approximate_above: Annotated[Int, Field(ge=16)] = 50_000  # exact search up to this many, IVF beyond
    nprobe: Count = 32
    ivf_codec: Literal["sq8", "flat"] = "sq8"  # IVF lists hold sq8 (8-bit, a quarter of the memory) or flat vectors
    blas_kernels: Literal["auto", "default"] = "auto"  # auto: AVX-512 kernels for faiss's OpenBLAS where it'd use SSE3


@dataclass(frozen=True)
class SearchConfig:
    """Ranking, labelling and duplicate detection."""

    __pydantic_config__ = SECTION

    k: Count = 5  # at most max_k
    max_k: Count = 50
    hybrid: Bool = True  # fuse FTS5 BM25 with vector ranks (reciprocal rank fusion)
    rrf_k: Limit = 60
    labels: Count = 5  # labels shown for "what sound is this?"
    autotags: Limit = 3  # zero-shot labels stored as tags on add; 0 disables
    autotag_min_score: Fraction = 0.05
    near_duplicate: Fraction = 0.98  # cosine above which an addition is reported as a near copy
    label_prompt: LabelPrompt = "This is a sound of {label}."
    vocabulary: Literal["audioset", "none"] = "audioset"  # built-in vocabulary; "none" for only the labels spaces add
    global_space: Name = "global"


@dataclass(frozen=True)
class QueueConfig:
    """The model's job queue."""

    __pydantic_config__ = SECTION

    max_pending: Count = 256
    max_batch: Count = 16  # texts per forward pass; audio batches use model.batch_size


@dataclass(frozen=True)
class LimitsConfig:
    """Per-user and per-space limits."""

    __pydantic_config__ = SECTION

    requests_per_minute: Limit = 30  # per user, in units: model work 1, paging/play/stats 0.1, help 0; 0 disables
    library_requests_per_minute: Limit = 120  # the same units, per library (a busy group); 0 disables
    space_quota: Limit = 10_000  # samples per space; 0 disables
    labels_per_library: Limit = 100  # a library's own labels for "what sound is this?"; 0 disables the cap
    max_bytes_in_flight: Count = 512 * MB  # downloaded plus decoded audio held at once; sized for a 2 GB host
    request_seconds: Seconds = 120.0  # a chat request's deadline
    bulk_request_seconds: Seconds = 1800.0  # a bulk import's deadline per file (it waits behind chat requests)


@dataclass(frozen=True)
class HealthConfig:
    """The optional /healthz and /metrics listener, and how long a part may be down before shira gives up."""

    __pydantic_config__ = SECTION

    enabled: Bool = False
    host: Name = "127.0.0.1"
    port: Annotated[Int, Field(ge=0, le=65535)] = 9464  # 0: any free port (tests)
    down_seconds: Seconds = 300.0  # an adapter or the model worker down this long: exit non-zero to be restarted


@dataclass(frozen=True)
class ConsoleConfig:
    """The local console: `shira console`, and the library every other CLI command uses by default."""

    __pydantic_config__ = SECTION

    space: Name = "console"
    user: Name = "console"


@dataclass(frozen=True)
class TimelineConfig:
    """Sound-event timelines of long recordings and videos (core/timeline.py, core/analyse.py)."""

    __pydantic_config__ = SECTION

    window_seconds: Seconds = 2.0  # each window is scored on its own; at most 10 (CLAP's own window)
    hop_seconds: Seconds = 0.5  # at most window_seconds; an event's edges are known to about this
    max_seconds: Seconds = 7200.0  # the longest recording analysed (2 hours)
    max_bytes: Count = 200 * MB  # the largest file accepted for a timeline
    deadline_seconds: Seconds = 14400.0  # a timeline's deadline: its analysis grows with its length
    on_threshold: Fraction = 0.75  # an event starts where its calibrated score reaches this
    off_threshold: Fraction = 0.5  # and lasts while it stays above this (at most on_threshold)
    min_event_seconds: Float = 1.0
    merge_gap_seconds: Float = 1.0  # one event, not two, across gaps shorter than this
    max_labels_per_moment: Count = 2
    rivals: Bool = False  # asked labels compete: one clearly beaten by another is dropped (e.g. pitches)
    refine_edges: Bool = True  # snap event edges to the clearest band-level change near them (20 ms frames)
    chart_rows: Count = 8  # labels shown in the picture


@dataclass(frozen=True)
class RunConfig:
    """`shira run`: how it stops."""

    __pydantic_config__ = SECTION

    drain_seconds: Annotated[Float, Field(ge=0)] = 20.0  # on SIGTERM, time to finish requests in flight; 0: none


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster mode: shared servers instead of the embedded SQLite file (empty keys keep the embedded default)."""

    __pydantic_config__ = SECTION

    postgres_dsn: PostgresDsn = ""  # postgresql://user:password@host:port/database; empty: SQLite in data_dir
    frontend_name: Str = ""  # this frontend's stable name: it replays what it journaled; distinct per process
    """Cluster mode: model workers (`shira worker`) behind Redis Streams; empty redis_url runs the model in-process."""

    __pydantic_config__ = SECTION

    redis_url: RedisUrl = ""  # redis://[:password@]host:port/db; empty: the in-process queue
    key_prefix: Name = "shira"  # every Redis key starts with this and a colon (one cluster per prefix)
    max_stream_length: Count = 1000  # jobs waiting or running per priority stream; beyond this, "busy"
    result_timeout_seconds: Seconds = 120.0  # a chat job's deadline at the workers (bulk jobs: bulk_request_seconds)
    claim_idle_seconds: Seconds = 30.0  # a job its worker stopped refreshing this long is taken over by another
    heartbeat_seconds: Seconds = 2.0  # workers announce themselves this often; three missed beats: gone
    connect_timeout_seconds: Seconds = 5.0  # reaching Redis at start; then "unreachable", never a hang
    worker_max_jobs: Count = 32  # jobs one worker holds at once; its model batches are made from these
    worker_drain_seconds: Annotated[Float, Field(ge=0)] = 20.0  # on SIGTERM, time to finish held jobs


@dataclass(frozen=True)
class Section:
    """A config section defined outside the core (an adapter's): its dataclass and its environment overrides."""

    cls: type  # a frozen dataclass built like the core's sections (fields typed with the aliases above)
    env: Mapping[str, str] = field(default_factory=dict)  # key -> environment variable that overrides it


@dataclass(frozen=True)
class Config:
    """The whole configuration: the core sections, and each adapter's own section by adapter name."""

    __pydantic_config__ = SECTION

    data_dir: Directory = Path("shira-data")
    log_level: LogLevel = "INFO"
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    timeline: TimelineConfig = field(default_factory=TimelineConfig)
    run: RunConfig = field(default_factory=RunConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    adapters: Mapping[str, Any] = field(default_factory=dict, hash=False)  # filled at load from the given sections

    def section(self, name: str) -> Any:
        """An adapter's validated section, e.g. config.section("telegram")."""
        try:
            return self.adapters[name]
        except KeyError:
            raise ConfigError(f"no [{name}] section: load the config with adapters.registry.load_config") from None

    @property
    def telegram(self) -> Any:
        """The [telegram] section (an adapters.telegram.config.TelegramConfig)."""
        return self.section("telegram")

    @property
    def discord(self) -> Any:
        """The [discord] section (an adapters.discord.config.DiscordConfig)."""
        return self.section("discord")


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None, sections: Mapping[str, Section] | None = None
) -> Config:
    """Read the TOML file (if any), apply the environment's overrides, then check every key; raise ConfigError."""
    env = os.environ if environ is None else environ
    sections = sections or {}
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"can't read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    overrides = dict(CORE_ENV) | {var: (name, key) for name, s in sections.items() for key, var in s.env.items()}
    from_env = _apply_env(raw, env, overrides)
    where = str(path) if path is not None else "defaults"
    problems: list[str] = []
    adapter_tables = {name: raw.pop(name, {}) for name in sections}
    if "adapters" in raw:  # a field of Config, but not a key of the file
        problems.append(f"{where}: unknown section [adapters]")
        del raw["adapters"]
    core = _validate(Config, raw, (), where, from_env, problems, known_sections=sorted(sections))
    adapters = {
        name: _validate(section.cls, adapter_tables[name], (name,), where, from_env, problems)
        for name, section in sections.items()
    }
    if not problems:
        problems += [f"{where}: {problem}" for problem in _cross_checks(core)]
    if problems:
        raise ConfigError("\n".join(problems))
    return dataclasses.replace(core, adapters=adapters)


def with_overrides(config: Config, data_dir: Path | None = None, model: str | None = None) -> Config:
    """Apply command-line overrides."""
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=Path(data_dir))
    if model is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, id=model))
    return config


def _apply_env(
    raw: dict[str, Any], env: Mapping[str, str], overrides: Mapping[str, tuple[str, ...]]
) -> dict[tuple[str, ...], str]:
    """Put each set environment variable's value at its key path in raw; returns which paths came from where."""
    from_env: dict[tuple[str, ...], str] = {}
    for var, key_path in overrides.items():
        value = env.get(var)
        if not value:
            continue
        table = raw
        for part in key_path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                break  # `model = 5`: validation says the section must be a table
        else:
            table[key_path[-1]] = value
            from_env[key_path] = var
    return from_env


@functools.cache
def _type_adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def _validate(
    cls: type,
    raw: object,
    prefix: tuple[str, ...],
    where: str,
    from_env: Mapping[tuple[str, ...], str],
    problems: list[str],
    known_sections: list[str] | None = None,
) -> Any:
    """Validate one table against its dataclass; append a line per problem and return None if there are any."""
    try:
        return _type_adapter(cls).validate_python(raw)
    except ValidationError as exc:
        for error in exc.errors():
            loc = prefix + tuple(str(part) for part in error["loc"])
            source = from_env.get(loc, where)
            problems.append(f"{source}: {_describe(cls, loc, prefix, error, known_sections)}")
    return None


_MESSAGES = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "path_type": "must be a string (a directory)",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "value_error": "{error}",
}


def _describe(
    cls: type, loc: tuple[str, ...], prefix: tuple[str, ...], error: Any, known_sections: list[str] | None
) -> str:
    """One validation error as `[section] key must be ... (got ...)`."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _known_keys(cls, loc[len(prefix) : -1])
        if len(loc) == 1 and known_sections is not None:  # the top level of the file
            known += known_sections
            if isinstance(value, dict):
                return f"unknown section [{loc[0]}]{_did_you_mean(loc[0], known)}"
        table = f"[{'.'.join(loc[:-1])}] " if len(loc) > 1 else ""
        return f"{table}unknown key {loc[-1]}{_did_you_mean(loc[-1], known)}"
    if kind == "dataclass_type":
        return f"[{loc[-1]}] must be a table (got {_shown(value)})"
    if kind == "literal_error":
        message = "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
    else:
        message = _MESSAGES[kind].format(**ctx) if kind in _MESSAGES else error["msg"]
    shown = "" if SECRET_KEYS & set(loc) else f" (got {_shown(value)})"
    return f"{_key_path(loc)} {message}{shown}"


def _key_path(loc: tuple[str, ...]) -> str:
    """("discord", "watch_channels", "1") -> "[discord] watch_channels[1]"; ("log_level",) -> "log_level"."""
    if not loc:
        return ""
    if len(loc) == 1:
        return loc[0]
    rest = loc[1] + "".join(f"[{part}]" for part in loc[2:])
    return f"[{loc[0]}] {rest}"


def _known_keys(cls: type, loc: tuple[str, ...]) -> list[str]:
    """The key names allowed in the table at loc (relative to cls), for suggestions."""
    value: object = cls()
    for part in loc:
        value = getattr(value, part, None)
    if not dataclasses.is_dataclass(value):
        return []
    return [f.name for f in dataclasses.fields(value) if f.name != "adapters"]


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _shown(value: object) -> str:
    """A value as TOML would spell it, shortened."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # inf, nan
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _cross_checks(config: Config) -> list[str]:
    """Rules between keys of the core sections."""
    problems = []
    timeline = config.timeline
    if timeline.hop_seconds > timeline.window_seconds or timeline.window_seconds > 10:
        problems.append(
            "[timeline] needs hop_seconds <= window_seconds <= 10 "
            f"(got window {timeline.window_seconds:g}, hop {timeline.hop_seconds:g})"
        )
    if timeline.off_threshold > timeline.on_threshold:
        problems.append("[timeline] off_threshold must be at most on_threshold")
    if config.model.hop_seconds > config.model.window_seconds:
        problems.append(
            f"[model] hop_seconds must be at most window_seconds ({config.model.window_seconds:g}), "
            f"or parts of long sounds are never embedded (got {config.model.hop_seconds:g})"
        )
    cluster = config.cluster
    if cluster.claim_idle_seconds < 3 * cluster.heartbeat_seconds:
        problems.append(
            "[cluster] claim_idle_seconds must be at least 3 heartbeat_seconds, or jobs of live workers are taken "
            f"over (got {cluster.claim_idle_seconds:g} and {cluster.heartbeat_seconds:g})"
        )
    if config.search.k > config.search.max_k:
        problems.append(f"[search] k must be at most max_k ({config.search.max_k}) (got {config.search.k})")
    return problems
