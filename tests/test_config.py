"""Configuration: the example documents every key, unknown keys are refused, secrets come from the env."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from core.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Config()
    for f in dataclasses.fields(Config):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            section = raw[f.name]
            assert set(section) == {g.name for g in dataclasses.fields(value)}, f.name
        else:
            assert f.name in raw
    assert load_config(ROOT / "config.example.toml", environ={}) == dataclasses.replace(
        defaults, data_dir=Path(raw["data_dir"])
    )


def test_unknown_keys_and_bad_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[model]\nidd = 'x'\n")
    with pytest.raises(ConfigError, match="idd"):
        load_config(path, environ={})
    path.write_text("[nonsense]\na = 1\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_config(path, environ={})
    path.write_text("[telegram]\nenabled = 'yes'\n")
    with pytest.raises(ConfigError, match="true or false"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_secrets_and_overrides_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[telegram]\nenabled = true\n[discord]\ndev_guild = 5\nwatch_channels = [1, 2]\n")
    config = load_config(
        path, environ={"SHIRA_TELEGRAM_TOKEN": "123:abc", "SHIRA_DISCORD_TOKEN": "xyz", "SHIRA_DATA_DIR": str(tmp_path)}
    )
    assert config.telegram.token == "123:abc" and config.telegram.enabled
    assert config.discord.token == "xyz" and config.discord.watch_channels == (1, 2)
    assert config.data_dir == tmp_path
