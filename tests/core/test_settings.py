"""Settings declared once: flags, variables, --help and the docs' tables all come from the declaration."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest

from chutes.core import configdocs
from chutes.core.settings import DeprecatedName, Setting, Settings
from chutes.scheduler import cli as scheduler_cli
from chutes.scheduler.config import SETTINGS as SCHEDULER
from chutes.scheduler.config import load_config

ROOT = Path(__file__).resolve().parents[2]

TABLE = Settings(
    "prog",
    [
        Setting("url", "where to call", env="CHUTES_SCHEDULER_URL", flag="--url", old_env=("CHUTES_API_URL",)),
        Setting("key", "the key", env="CHUTES_KEY", flag="--key", old_flags=("--scheduler-key",)),
        Setting("wait", "seconds", flag="--wait", default=2.5, parse=float),
        Setting("only", "repeatable", env="CHUTES_ONLY", flag="--only", multiple=True),
    ],
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    TABLE.add_flags(parser)
    return parser.parse_args(argv)


def test_defaults_then_variables_then_flags() -> None:
    assert TABLE.resolve({}, parse()) == {"url": None, "key": None, "wait": 2.5, "only": None}
    env = {"CHUTES_SCHEDULER_URL": "http://a", "CHUTES_KEY": " k1 ", "CHUTES_ONLY": "x"}
    assert TABLE.resolve(env, parse()) == {"url": "http://a", "key": "k1", "wait": 2.5, "only": ["x"]}
    got = TABLE.resolve(env, parse("--url", "http://b", "--wait", "4", "--only", "y", "--only", "z"))
    assert got == {"url": "http://b", "key": "k1", "wait": 4.0, "only": ["y", "z"]}
    assert TABLE.resolve({"CHUTES_KEY": "  "}, parse())["key"] is None  # blank is unset


def test_old_names_are_still_read_with_a_warning_naming_the_new_one() -> None:
    with pytest.warns(DeprecatedName, match="CHUTES_API_URL is deprecated; use CHUTES_SCHEDULER_URL"):
        assert TABLE.resolve({"CHUTES_API_URL": "http://old"})["url"] == "http://old"
    with pytest.warns(DeprecatedName, match="--scheduler-key is deprecated; use --key"):
        assert TABLE.resolve({}, parse("--scheduler-key", "k2"))["key"] == "k2"
    # Both names set: the current one wins, and nothing is said about the old one.
    assert TABLE.resolve({"CHUTES_API_URL": "http://old", "CHUTES_SCHEDULER_URL": "http://new"})["url"] == "http://new"


def test_help_and_docs_name_the_variable_and_default() -> None:
    parser = argparse.ArgumentParser()
    TABLE.add_flags(parser)
    text = parser.format_help()
    assert "[env CHUTES_SCHEDULER_URL]" in text and "[default 2.5]" in text
    assert "--scheduler-key" not in text  # old flags work but are not advertised
    table = TABLE.markdown()
    assert "| `CHUTES_SCHEDULER_URL` (formerly `CHUTES_API_URL`) | `--url` |  | where to call |" in table
    assert "| | `--wait` | `2.5` | seconds |".replace("| |", "|  |") in table


def test_every_scheduler_flag_comes_from_the_declaration() -> None:
    help_text = " ".join(scheduler_cli._parser()._subparsers._group_actions[0].choices["serve"].format_help().split())
    for name in (*scheduler_cli.SERVE_FLAGS, *scheduler_cli.COMMON_FLAGS):
        s = SCHEDULER.by_name[name]
        assert s.flag in help_text and (s.env is None or f"env {s.env}" in help_text), name


def test_scheduler_settings_once_in_the_model_reach_the_loops() -> None:
    config = load_config({"CHUTES_AUTOSCALE_INTERVAL": "3", "CHUTES_METERING_INTERVAL": "1"}, run_loops=False)
    assert config.autoscale_interval_s == 3.0 and config.metering_interval_s == 1.0 and config.run_loops is False


def test_the_docs_tables_match_the_declarations() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert configdocs.main(["--check", str(doc)]) == 0, "run: python -m chutes.core.configdocs"
    for prog in ("chutes-scheduler", "chutes-agent", "chutes-gateway"):
        assert f"<!-- settings: {prog} -->" in doc.read_text()


def test_a_drifted_table_is_caught_and_rewritten(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text("# x\n<!-- settings: chutes-agent -->\n| stale |\n<!-- /settings -->\nafter\n")
    assert configdocs.main(["--check", str(doc)]) == 1
    assert configdocs.main([str(doc)]) == 0
    assert "`--heartbeat`" in doc.read_text() and doc.read_text().endswith("<!-- /settings -->\nafter\n")
    assert configdocs.main(["--check", str(doc)]) == 0


def test_the_gateway_key_flag_has_its_variable_s_name_and_the_old_flag_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chutes.gateway.cli import parse_args

    monkeypatch.delenv("CHUTES_GATEWAY_KEY", raising=False)
    monkeypatch.setenv("NOMAD_PORT_http", "8123")
    monkeypatch.delenv("CHUTES_GATEWAY_PORT", raising=False)
    args = parse_args(["--gateway-key", "k1"])
    assert args.gateway_key == "k1" and args.port == 8123 and args.invalidation_key == "chutes/gateway/invalidations"
    with pytest.warns(DeprecatedName, match="--scheduler-key is deprecated; use --gateway-key"):
        assert parse_args(["--scheduler-key", "k2"]).gateway_key == "k2"
    monkeypatch.setenv("CHUTES_GATEWAY_KEY", "k3")
    assert parse_args([]).gateway_key == "k3"


def test_one_setting_is_read_alone_and_an_old_name_warns_only_when_it_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chutes.config import SETTINGS as CLI
    from chutes.config import config_path

    env = {"CHUTES_API_URL": "http://old:1", "CHUTES_CONFIG": str(tmp_path / "c.ini"), "CHUTES_DEBUG": "0"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old URL variable is not read: no warning
        assert CLI.from_env(env, names=["config", "debug"])[0] == {"config": str(tmp_path / "c.ini"), "debug": "0"}
    with pytest.warns(DeprecatedName, match="CHUTES_API_URL is deprecated"):
        assert CLI.from_env(env, names=["api_url"])[0] == {"api_url": "http://old:1"}
    monkeypatch.setenv("CHUTES_CONFIG", str(tmp_path / "c.ini"))
    assert config_path() == tmp_path / "c.ini"
    assert "[env CHUTES_CONFIG" in CLI.by_name["config"].text() and "%%" not in CLI.by_name["config"].text()
