"""The docker driver's pure parts: its config checks, image references, GPU passing and the podman argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from chutes.devcluster.nomad.container_spec import (
    HOST_LOOPBACK,
    ContainerSpec,
    ContainerSpecError,
    container_name,
    create_argv,
    env_file_text,
    multiline_env,
    plan_gpus,
    published_ports,
)
from chutes.devcluster.nomad.docker_config import (
    DockerConfigError,
    docker_config_problems,
    parse_docker_config,
    parse_image_ref,
    tls_verify,
)
from chutes.devcluster.nomad.podman import podman_environment

DIGEST = "sha256:" + "0f" * 32


def test_a_full_config_parses_with_nomads_json_shapes() -> None:
    config = parse_docker_config(
        {
            "image": f"127.0.0.1:5000/alice/app:v1@{DIGEST}",
            "command": "python3",
            "args": ["-m", "chutes.runtime"],
            "ports": ["http"],
            "labels": [{"team": "a"}],  # HCL1 jobs send map options as a list of one map
            "logging": [{"type": "json-file", "config": [{"max-size": "10m", "max-file": "3"}]}],
            "auth": {"username": "u", "password": "p"},
            "image_pull_timeout": "30m",
            "pids_limit": 100,
            "shm_size": 1 << 30,
            "init": True,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "ulimit": {"nofile": "1024:2048"},
            "runtime": "nvidia",
        }
    )
    assert config.labels == {"team": "a"}
    assert config.auth is not None and config.auth.username == "u"
    assert config.pull_timeout_s == 1800 and config.pids_limit == 100 and config.no_new_privileges
    assert config.ulimits == {"nofile": "1024:2048"} and config.cap_drop == ("ALL",)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"image": "a", "privileged": True}, "Docker privileged mode is disabled on this Nomad agent"),
        ({"image": "a", "volumes": ["/:/host"]}, "host mounts and devices are disabled"),
        ({"image": "a", "devices": [{"host_path": "/dev/nvidia0"}]}, "host mounts and devices are disabled"),
        ({"image": "a", "imgae": "b"}, 'No argument or block type is named "imgae"'),
        ({"image": "a", "network_mode": "host"}, "network_mode 'host'"),
        ({"image": "a", "runtime": "kata"}, 'requested runtime "kata" is not allowed'),
        ({"image": "a", "security_opt": ["seccomp=unconfined"]}, "only no-new-privileges"),
        ({"image": "a", "dns_servers": ["1.1.1.1"]}, "dns_servers: not supported"),
        ({"image": "a", "image_pull_timeout": "soon"}, "image_pull_timeout"),
        ({"image": "Bad/Case"}, "invalid reference format"),
        ({}, "image: a non-empty image reference is required"),
        ({"image": "a", "args": "--privileged"}, "args: expected a list of strings"),
    ],
)
def test_configs_it_cannot_run_are_refused_by_name(config: dict[str, object], needle: str) -> None:
    problems = docker_config_problems(config)
    assert any(needle in p for p in problems), problems
    with pytest.raises(DockerConfigError):
        parse_docker_config(config)


def test_image_references_are_read_as_docker_reads_them() -> None:
    assert str(parse_image_ref("python:3.11")) == "docker.io/library/python:3.11"
    ref = parse_image_ref(f"127.0.0.1:5000/alice/app@{DIGEST}")
    assert (ref.registry, ref.host, ref.path, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "127.0.0.1",
        "alice/app",
        None,
        DIGEST,
    )
    assert not ref.always_pull
    assert parse_image_ref("localhost/x").always_pull and parse_image_ref("reg.io/x:latest").always_pull
    assert parse_image_ref("myreg:5000/x:1").registry == "myreg:5000"
    with pytest.raises(ValueError):
        parse_image_ref("x;rm -rf /")


@pytest.mark.parametrize(
    ("ref", "insecure", "verify"),
    [
        ("127.0.0.1:5000/a:1", (), False),
        ("localhost:5000/a:1", (), False),
        ("[::1]:5000/a:1", (), False),
        ("registry.internal/a:1", (), True),
        ("registry.internal:5000/a:1", ("registry.internal",), False),
        ("registry.internal:5000/a:1", ("registry.internal:5000",), False),
        ("registry.internal:5000/a:1", ("other:5000",), True),
    ],
)
def test_tls_is_verified_except_for_loopback_and_listed_registries(
    ref: str, insecure: tuple[str, ...], verify: bool
) -> None:
    assert tls_verify(parse_image_ref(ref), frozenset(insecure)) is verify


def test_gpus_go_by_cdi_name_then_runtime_and_simulated_ones_only_by_env() -> None:
    ids = ["GPU-aaa", "GPU-bbb"]
    assert plan_gpus([], simulated=False, cdi_names=frozenset(), index_of={}, nvidia_runtime=None).devices == ()
    sim = plan_gpus(ids, simulated=True, cdi_names=frozenset(), index_of={}, nvidia_runtime=None)
    assert sim.devices == () and sim.runtime is None
    by_uuid = frozenset({"nvidia.com/gpu=GPU-aaa", "nvidia.com/gpu=GPU-bbb", "nvidia.com/gpu=all"})
    assert plan_gpus(ids, simulated=False, cdi_names=by_uuid, index_of={}, nvidia_runtime=None).devices == (
        "nvidia.com/gpu=GPU-aaa",
        "nvidia.com/gpu=GPU-bbb",
    )
    by_index = frozenset({"nvidia.com/gpu=0", "nvidia.com/gpu=3"})
    plan = plan_gpus(
        ids, simulated=False, cdi_names=by_index, index_of={"GPU-aaa": 3, "GPU-bbb": 0}, nvidia_runtime=None
    )
    assert plan.devices == ("nvidia.com/gpu=3", "nvidia.com/gpu=0")
    runtime = plan_gpus(ids, simulated=False, cdi_names=frozenset(), index_of={}, nvidia_runtime="/usr/bin/ncr")
    assert runtime.runtime == "/usr/bin/ncr" and runtime.devices == ()
    with pytest.raises(ContainerSpecError, match="nvidia-ctk cdi generate"):
        plan_gpus(ids, simulated=False, cdi_names=frozenset(), index_of={}, nvidia_runtime=None)


def test_ports_map_host_to_container_and_unknown_labels_fail() -> None:
    alloc_ports = [{"Label": "http", "Value": 23456, "To": 0}, {"Label": "tb", "Value": 23457, "To": 6006}]
    assert published_ports(["http", "tb"], alloc_ports) == [(23456, 23456), (23457, 6006)]
    with pytest.raises(ContainerSpecError, match="'grpc'"):
        published_ports(["grpc"], alloc_ports)


def test_env_file_keeps_secrets_off_the_command_line_and_refuses_what_it_cannot_hold() -> None:
    assert env_file_text({"A": "1", "B": "x=y #z"}) == "A=1\nB=x=y #z\n"
    for bad in ({"A": "a\x00b"}, {"A=B": "1"}, {"#A": "1"}):
        with pytest.raises(ContainerSpecError):
            env_file_text(bad)


def test_values_spanning_lines_are_named_in_the_env_file_and_given_through_podmans_environment() -> None:
    env = {"A": "1", "PEM": "-----BEGIN-----\nAAAA\n-----END-----", "CR": "x\ry"}
    assert env_file_text(env) == "A=1\nPEM\nCR\n"  # a bare name: podman reads the value from its environment
    assert multiline_env(env) == {"PEM": env["PEM"], "CR": "x\ry"}
    assert multiline_env({"A": "1"}) == {}


def test_create_argv_is_isolated_limited_and_labelled(tmp_path: Path) -> None:
    config = parse_docker_config(
        {"image": "a", "command": "python3", "args": ["-m", "x", "--privileged"], "init": True, "pids_limit": 64}
    )
    spec = ContainerSpec(
        name=container_name("runtime", "abc"),
        image=f"127.0.0.1:5000/a@{DIGEST}",
        config=config,
        env_file=tmp_path / "env",
        alloc_dir=tmp_path / "alloc",
        task_dir=tmp_path / "t" / "local",
        secrets_dir=tmp_path / "t" / "secrets",
        ports=((23456, 23456),),
        cpu_mhz=500,
        memory_mb=256,
        labels={"io.chutes.devcluster": "owner"},
    )
    argv = create_argv("podman", spec)
    image_at = argv.index(spec.image)
    options, command = argv[:image_at], argv[image_at + 1 :]
    assert command == ["python3", "-m", "x", "--privileged"]  # after the image: the container's, not podman's
    assert "--privileged" not in options and not any(o.split("=")[-1] == "host" for o in options)
    # Every option carries its value in the same argument: no job value can become an option of its own.
    assert all(o.startswith("--") for o in options[2:])
    assert "--network=slirp4netns:allow_host_loopback=true" in options
    assert f"--add-host=host.containers.internal:{HOST_LOOPBACK}" in options
    assert "--publish=127.0.0.1:23456:23456" in options  # loopback only
    assert {"--memory=256m", "--memory-swap=256m", "--pids-limit=64", "--cpu-shares=500", "--init"} <= set(options)
    assert f"--env-file={tmp_path / 'env'}" in options
    # Nothing of the host's environment, whatever containers.conf says: only the task's env file.
    assert {"--env-host=false", "--http-proxy=false"} <= set(options)
    assert not any(o.startswith(("--env=", "-e")) for o in options)
    assert "--label=io.chutes.devcluster=owner" in options and "--rm" in options
    assert [o for o in options if o.startswith("--volume=")] == [
        f"--volume={tmp_path / 'alloc'}:/alloc:rw",
        f"--volume={tmp_path / 't' / 'local'}:/local:rw",
        f"--volume={tmp_path / 't' / 'secrets'}:/secrets:rw",
    ]
    assert container_name("../evil task", "abc") == "evil-task-abc"


def test_podman_runs_with_the_platforms_credentials_scrubbed() -> None:
    host = {
        "CHUTES_ADMIN_KEY": "cnk_admin", "NOMAD_TOKEN": "n", "CONSUL_HTTP_TOKEN": "c", "MY_API_KEY": "k",
        "PATH": "/usr/bin", "HOME": "/root", "CONTAINERS_CONF": "/etc/c.conf", "REGISTRY_AUTH_FILE": "/run/auth.json",
    }  # fmt: skip
    assert podman_environment(host) == {
        "PATH": "/usr/bin", "HOME": "/root", "CONTAINERS_CONF": "/etc/c.conf", "REGISTRY_AUTH_FILE": "/run/auth.json",
    }  # fmt: skip
