"""Settings: file < environment < flags; the file is private; a broken file is a clear error."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chutes import config
from chutes.core.settings import DeprecatedName


def test_missing_file_gives_empty_settings(config_file: Path) -> None:
    settings = config.load()
    assert (settings.api_url, settings.api_key, settings.gateway_url) == (None, None, None)
    assert settings.path == config_file
    with pytest.raises(config.ConfigError) as info:
        settings.require_api()
    assert "chutes dev" in (info.value.hint or "")


def test_save_then_load_round_trip_is_private(config_file: Path) -> None:
    written = config.save(config.Settings(api_url="http://a:1/", gateway_url="http://g:2", api_key="cnk_x"))
    assert written == config_file
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    settings = config.load()
    assert settings.api_url == "http://a:1"
    assert settings.gateway_url == "http://g:2"
    assert settings.require_api() == ("http://a:1", "cnk_x")


def test_environment_beats_file_and_flags_beat_environment(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.save(config.Settings(api_url="http://file", gateway_url="http://file-gw", api_key="file-key"))
    monkeypatch.setenv("CHUTES_SCHEDULER_URL", "http://env")
    monkeypatch.setenv("CHUTES_API_KEY", "env-key")
    settings = config.load()
    assert (settings.api_url, settings.api_key, settings.gateway_url) == ("http://env", "env-key", "http://file-gw")
    settings = config.load(api_url="http://flag", api_key="flag-key", gateway_url="http://flag-gw")
    assert (settings.api_url, settings.api_key, settings.gateway_url) == ("http://flag", "flag-key", "http://flag-gw")


def test_the_old_name_of_the_scheduler_url_is_still_read_with_a_warning(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHUTES_API_URL", "http://old")
    with pytest.warns(DeprecatedName, match="CHUTES_API_URL is deprecated; use CHUTES_SCHEDULER_URL"):
        assert config.load().api_url == "http://old"
    monkeypatch.setenv("CHUTES_SCHEDULER_URL", "http://new")
    assert config.load().api_url == "http://new"


def test_save_keeps_other_sections(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("[other]\nkeep = yes\n[api]\nkey = old\n")
    config.save(config.Settings(api_url="http://new"))
    text = config_file.read_text()
    assert "keep = yes" in text and "url = http://new" in text and "old" not in text


def test_unreadable_file_is_a_config_error(config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("this is not an ini file\n")
    with pytest.raises(config.ConfigError) as info:
        config.load()
    assert str(config_file) in str(info.value)
    assert "CHUTES_CONFIG" in (info.value.hint or "")
