"""``chutes-devcluster``: a single-process Nomad- and Consul-API-compatible cluster for development and tests."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from chutes.core.settings import Setting, Settings
from chutes.devcluster.config import ConfigError, DevclusterConfig, parse_node_spec, read_nodes_file
from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.nomad.podman import DriverError
from chutes.devcluster.server import Devcluster

log = logging.getLogger("chutes.devcluster")


#: Every option of ``chutes-devcluster`` (its --help and docs/configuration.md come from here).
SETTINGS = Settings(
    "chutes-devcluster",
    [
        Setting("host", "address to listen on", flag="--host", default="127.0.0.1"),
        Setting("nomad_port", "Nomad HTTP port; `0` picks a free one", flag="--nomad-port", default=4646, parse=int),
        Setting("consul_port", "Consul HTTP port; `0` picks a free one", flag="--consul-port", default=8500,
                parse=int),
        Setting("node", "a simulated GPU node, e.g. `gpu-a=h100_sxm:8` (repeatable; `NAME=` for no GPUs)",
                flag="--node", default=(), multiple=True, metavar="NAME=MODEL:COUNT"),
        Setting("nodes_file", "file with one NAME=MODEL:COUNT per line", flag="--nodes-file", parse=Path),
        Setting("no_local_node", "do not add a node for this machine", flag="--no-local-node", const=True,
                default=False),
        Setting("local_node_name", "name of this machine's node", flag="--local-node-name",
                shown_default="the hostname"),
        Setting("no_gpu_probe", "do not read this machine's GPUs through NVML", flag="--no-gpu-probe", const=True,
                default=False),
        Setting("ports_file", 'write `{"nomad": N, "consul": N}` here once listening', flag="--ports-file",
                parse=Path),
        Setting("data_dir", "state and task directories", flag="--data-dir", parse=Path,
                shown_default="a temporary directory"),
        Setting("acl", "enforce ACLs (default deny) on both APIs; bootstrap: `POST /v1/acl/bootstrap`",
                flag="--acl", const=True, default=False),
        Setting("nomad_token", "ACLs on, with this Nomad management token", env="CHUTES_DEVCLUSTER_NOMAD_TOKEN",
                flag="--nomad-token"),
        Setting("consul_token", "ACLs on, with this Consul management token", env="CHUTES_DEVCLUSTER_CONSUL_TOKEN",
                flag="--consul-token"),
        Setting("nomad_token_file", "read the Nomad management token from this file (kept out of argv and "
                "environ)", flag="--nomad-token-file", parse=Path),
        Setting("consul_token_file", "read the Consul management token from this file", flag="--consul-token-file",
                parse=Path),
        Setting("tls_cert", "serve both APIs over HTTPS with this PEM certificate", flag="--tls-cert", parse=Path),
        Setting("tls_key", "the certificate's PEM private key", flag="--tls-key", parse=Path),
        Setting("tls_client_ca", "require client certificates signed by this CA", flag="--tls-client-ca",
                parse=Path),
        Setting("session_min_ttl", "smallest Consul session TTL accepted (Consul: 10s)", flag="--session-min-ttl",
                default="10s"),
        Setting("docker_driver", "run docker tasks with podman: `auto` = when podman works",
                env="CHUTES_DEVCLUSTER_DOCKER_DRIVER", flag="--docker-driver", default="auto",
                choices=("auto", "on", "off")),
        Setting("insecure_registry", "pull from this registry without TLS verification (loopback registries "
                "always are)", flag="--insecure-registry", default=(), multiple=True, metavar="HOST[:PORT]"),
        Setting("log_level", "log level", env="CHUTES_DEVCLUSTER_LOG_LEVEL", flag="--log-level", default="info"),
    ],
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chutes-devcluster",
        description="Serve the subset of Nomad's and Consul's HTTP APIs the platform uses, running tasks locally.",
    )
    SETTINGS.add_flags(p)
    return p


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The parsed flags over the environment (default ``os.environ``) over the defaults, as one namespace."""
    return argparse.Namespace(**SETTINGS.resolve(os.environ if env is None else env, args))


def _token(value: str | None, file: Path | None, flag: str) -> str | None:
    if file is None:
        return value or None
    try:
        token = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {file}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"{flag} {file} is empty")
    return token


def config_from_args(args: argparse.Namespace) -> DevclusterConfig:
    """The config of resolved settings (:func:`resolve`)."""
    nodes = [parse_node_spec(text) for text in args.node]
    if args.nodes_file is not None:
        nodes += read_nodes_file(args.nodes_file)
    try:
        min_ttl = parse_duration(args.session_min_ttl)
    except DurationError as exc:
        raise ConfigError(f"--session-min-ttl: {exc}") from None
    config = DevclusterConfig(
        host=args.host,
        nomad_port=args.nomad_port,
        consul_port=args.consul_port,
        nodes=nodes,
        local_node=not args.no_local_node,
        local_node_name=args.local_node_name,
        probe_gpus=not args.no_gpu_probe,
        data_dir=args.data_dir,
        ports_file=args.ports_file,
        acl=args.acl,
        nomad_token=_token(args.nomad_token, args.nomad_token_file, "--nomad-token-file"),
        consul_token=_token(args.consul_token, args.consul_token_file, "--consul-token-file"),
        session_min_ttl_s=min_ttl,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        docker_driver=args.docker_driver,
        insecure_registries=tuple(args.insecure_registry),
    )
    config.validate()
    return config


async def serve(config: DevclusterConfig) -> None:
    cluster = Devcluster(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    try:
        print(json.dumps(cluster.ports()), flush=True)
        nodes = ", ".join(f"{n.name} ({sum(len(d.instances) for d in n.devices)} GPU)"
                          for n in cluster.nomad.state.nodes.values())  # fmt: skip
        docker = cluster.nomad.docker
        drivers = f"raw_exec, docker (podman {docker.version})" if docker else "raw_exec (docker driver off)"
        log.info(
            "devcluster ready: NOMAD_ADDR=%s://%s:%d CONSUL_HTTP_ADDR=%s://%s:%d nodes: %s; drivers: %s; data in %s",
            config.scheme, config.host, cluster.nomad_port, config.scheme, config.host, cluster.consul_port, nodes,
            drivers, cluster.data_dir,
        )  # fmt: skip
        await stop.wait()
        log.info("stopping: killing every task")
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = resolve(build_parser().parse_args(argv))
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        asyncio.run(serve(config))
    except (ConfigError, DriverError) as exc:
        print(f"chutes-devcluster: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chutes-devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
