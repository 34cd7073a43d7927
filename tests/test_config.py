"""Configuration: every key checked at load with the file and key named, the example documents every key."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from adapters.discord.config import DiscordConfig
from adapters.registry import ADAPTERS, load_config, sections
from adapters.telegram.config import TelegramConfig
from bot.app import enabled_adapters, run_adapters
from core.config import Config, ConfigError
from core.config import load_config as load_core_config
from tests.test_cli import shira

ROOT = Path(__file__).resolve().parents[1]


def refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """Load a config file with this text and return the ConfigError's message."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return str(caught.value)


def test_example_config_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = load_config(None, environ={})
    tables = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Config) if f.name != "adapters"}
    tables |= defaults.adapters
    assert set(raw) == set(tables)
    for name, value in tables.items():
        if dataclasses.is_dataclass(value):
            assert set(raw[name]) == {g.name for g in dataclasses.fields(value)}, name
    assert load_config(ROOT / "config.example.toml", environ={}) == defaults


def test_a_wrong_type_is_refused_with_the_file_and_key_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert refusal(tmp_path, '[model]\nthreads = "4"\n') == f'{path}: [model] threads must be an integer (got "4")'
    assert refusal(tmp_path, "[telegram]\nenabled = 'yes'\n").endswith(
        '[telegram] enabled must be true or false (got "yes")'
    )
    assert "[search] k must be an integer (got true)" in refusal(tmp_path, "[search]\nk = true\n")  # bool is no int
    assert "[audio] max_add_seconds must be a number" in refusal(tmp_path, "[audio]\nmax_add_seconds = '1'\n")
    assert "[discord] watch_channels[1] must be an integer" in refusal(
        tmp_path, "[discord]\nwatch_channels = [1, '2']\n"
    )
    assert "[model] must be a table" in refusal(tmp_path, "model = 'x'\n")
    assert f"{path}: log_level must be one of" in refusal(tmp_path, "log_level = 'loud'\n")


def test_a_value_out_of_range_is_refused_with_the_file_and_key_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    message = refusal(tmp_path, "[index]\nivf_codec = 'pq'\n")
    assert message == f'{path}: [index] ivf_codec must be one of sq8, flat (got "pq")'
    assert refusal(tmp_path, "[model]\nbatch_size = 0\n") == f"{path}: [model] batch_size must be at least 1 (got 0)"
    assert "[audio] decode_timeout_seconds must be greater than 0" in refusal(
        tmp_path, "[audio]\ndecode_timeout_seconds = 0\n"
    )
    assert "[audio] max_query_seconds must be a finite number" in refusal(
        tmp_path, "[audio]\nmax_query_seconds = inf\n"
    )
    assert "[search] near_duplicate must be at most 1" in refusal(tmp_path, "[search]\nnear_duplicate = 1.5\n")
    assert "[search] label_prompt must contain {label}" in refusal(tmp_path, "[search]\nlabel_prompt = 'a sound'\n")
    assert "[telegram] base_url must start with http://" in refusal(tmp_path, "[telegram]\nbase_url = 'api.org'\n")
    assert "[discord] gateway_url must start with ws://" in refusal(tmp_path, "[discord]\ngateway_url = 'http://x'\n")
    assert "[model] hop_seconds must be at most window_seconds" in refusal(
        tmp_path, "[model]\nwindow_seconds = 5\nhop_seconds = 6\n"
    )
    assert "[search] k must be at most max_k (10)" in refusal(tmp_path, "[search]\nk = 11\nmax_k = 10\n")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    lines = refusal(tmp_path, "[model]\ndevice = 'tpu'\n[limits]\nspace_quota = -1\n").splitlines()
    assert [line.split(": ", 1)[1].split(" must")[0] for line in lines] == ["[model] device", "[limits] space_quota"]


def test_unknown_keys_and_sections_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert refusal(tmp_path, "[model]\nidd = 'x'\n") == f"{path}: [model] unknown key idd (did you mean id?)"
    assert refusal(tmp_path, "[nonsense]\na = 1\n") == f"{path}: unknown section [nonsense]"
    assert (
        refusal(tmp_path, "[telegrm]\nenabled = true\n")
        == f"{path}: unknown section [telegrm] (did you mean telegram?)"
    )
    assert refusal(tmp_path, "[discord]\ntokn = 'x'\n") == f"{path}: [discord] unknown key tokn (did you mean token?)"
    assert refusal(tmp_path, "flavour = 'red'\n") == f"{path}: unknown key flavour"
    assert refusal(tmp_path, "[adapters]\ntelegram = {}\n") == f"{path}: unknown section [adapters]"
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml", environ={})


def test_values_are_typed_as_declared(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "log_level = 'debug'\n[model]\nwindow_seconds = 7\nhop_seconds = 5\n[discord]\nwatch_channels = [3]\n"
    )
    config = load_config(path, environ={})
    assert config.model.window_seconds == 7.0 and isinstance(config.model.window_seconds, float)  # an int for a float
    assert config.log_level == "DEBUG"
    assert config.discord.watch_channels == (3,)
    assert isinstance(config.data_dir, Path)
    assert isinstance(config.telegram, TelegramConfig) and isinstance(config.discord, DiscordConfig)


def test_secrets_and_overrides_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[telegram]\nenabled = true\n[discord]\ndev_guild = 5\nwatch_channels = [1, 2]\n")
    config = load_config(
        path,
        environ={
            "SHIRA_TELEGRAM_TOKEN": "123:abc",
            "SHIRA_DISCORD_TOKEN": "xyz",
            "SHIRA_DATA_DIR": str(tmp_path),
            "SHIRA_MODEL": "some/model",
        },
    )
    assert config.telegram.token == "123:abc" and config.telegram.enabled
    assert config.discord.token == "xyz" and config.discord.watch_channels == (1, 2)
    assert config.data_dir == tmp_path and config.model.id == "some/model"


def test_environment_overrides_are_checked_and_named_without_echoing_secrets(tmp_path: Path) -> None:
    message = refusal(tmp_path, "[telegram]\nenabled = true\n", environ={"SHIRA_TELEGRAM_TOKEN": "123:abc\nsecret"})
    assert message == "SHIRA_TELEGRAM_TOKEN: [telegram] token must not contain spaces or line breaks"
    message = refusal(tmp_path, "[discord]\ntoken = 'a b'\n")
    assert message.endswith("[discord] token must not contain spaces or line breaks") and "a b" not in message


def test_platform_sections_need_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[telegram]\nenabled = true\n")
    with pytest.raises(ConfigError, match=re.escape("unknown section [telegram]")):
        load_core_config(path, environ={})
    core_only = load_core_config(None, environ={})
    with pytest.raises(ConfigError, match="adapters.registry.load_config"):
        _ = core_only.telegram
    assert set(sections()) == set(ADAPTERS) == {"telegram", "discord"}


def test_loading_the_config_imports_no_platform_library() -> None:
    code = (
        "import sys\n"
        "from adapters.registry import load_config\n"
        "config = load_config(None, environ={})\n"
        "assert config.telegram.enabled is False and config.discord.enabled is False\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('discord', 'telegram'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


async def test_the_registry_names_enabled_adapters_and_the_missing_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[discord]\nenabled = true\n[telegram]\nenabled = true\ntoken = '1:a'\n")
    config = load_config(path, environ={})
    assert enabled_adapters(config) == ["telegram", "discord"]
    with caplog.at_level(logging.ERROR, logger="bot.app"):
        assert await run_adapters(config) == 2
    assert "[discord] is enabled but has no token (set SHIRA_DISCORD_TOKEN)" in caplog.text


def test_the_cli_exits_2_with_the_message_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[index]\nivf_codec = 'pq'\n")
    proc = shira(tmp_path / "data", tmp_path / "model", "--config", str(bad), "stats", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'shira: {bad}: [index] ivf_codec must be one of sq8, flat (got "pq")'
    assert not (tmp_path / "data").exists()
