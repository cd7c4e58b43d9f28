"""``chutes-devcluster``'s options: declared once, a flag over its variable over the default."""

from __future__ import annotations

import pytest

from chutes.devcluster.cli import SETTINGS, build_parser, config_from_args, resolve


def test_flags_win_over_variables_over_defaults() -> None:
    env = {"CHUTES_DEVCLUSTER_DOCKER_DRIVER": "off", "CHUTES_DEVCLUSTER_NOMAD_TOKEN": "from-env"}
    args = resolve(build_parser().parse_args(["--nomad-port", "0", "--docker-driver", "on"]), env)
    assert (args.nomad_port, args.consul_port, args.docker_driver, args.nomad_token) == (0, 8500, "on", "from-env")
    args = resolve(build_parser().parse_args(["--node", "a=h100_sxm:1", "--node", "b=", "--acl"]), env)
    config = config_from_args(args)
    assert [n.name for n in config.nodes] == ["a", "b"] and config.acl and config.docker_driver == "off"
    assert resolve(build_parser().parse_args([]), {}).docker_driver == "auto"


def test_help_names_every_option_and_its_variable() -> None:
    text = " ".join(build_parser().format_help().split())
    for s in SETTINGS:
        assert s.flag and s.flag in text and (s.env is None or f"env {s.env}" in text), s.name


def test_a_bad_choice_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--docker-driver", "maybe"])
    assert "--docker-driver" in capsys.readouterr().err
