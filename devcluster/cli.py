"""``chutes-devcluster``: a single-process Nomad- and Consul-API-compatible cluster for development and tests."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from chutes.devcluster.config import ConfigError, DevclusterConfig, parse_node_spec, read_nodes_file
from chutes.devcluster.durations import DurationError, parse_duration
from chutes.devcluster.nomad.podman import DriverError
from chutes.devcluster.server import Devcluster

log = logging.getLogger("chutes.devcluster")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chutes-devcluster",
        description="Serve the subset of Nomad's and Consul's HTTP APIs the platform uses, running tasks locally.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--nomad-port", type=int, default=4646, help="Nomad HTTP port; 0 picks a free one")
    p.add_argument("--consul-port", type=int, default=8500, help="Consul HTTP port; 0 picks a free one")
    p.add_argument("--node", action="append", default=[], metavar="NAME=MODEL:COUNT",
                   help="a simulated GPU node, e.g. gpu-a=h100_sxm:8 (repeatable; NAME= for no GPUs)")  # fmt: skip
    p.add_argument("--nodes-file", type=Path, help="file with one NAME=MODEL:COUNT per line")
    p.add_argument("--no-local-node", action="store_true", help="do not add a node for this machine")
    p.add_argument("--local-node-name", help="name of this machine's node (default: the hostname)")
    p.add_argument("--no-gpu-probe", action="store_true", help="do not read this machine's GPUs through NVML")
    p.add_argument("--ports-file", type=Path, help='write {"nomad": N, "consul": N} here once listening')
    p.add_argument("--data-dir", type=Path, help="state and task directories (default: a temporary directory)")
    p.add_argument("--acl", action="store_true",
                   help="enforce ACLs (default deny) on both APIs; bootstrap: POST /v1/acl/bootstrap")  # fmt: skip
    p.add_argument("--nomad-token", default=os.environ.get("CHUTES_DEVCLUSTER_NOMAD_TOKEN"),
                   help="ACLs on, with this Nomad management token (env CHUTES_DEVCLUSTER_NOMAD_TOKEN)")  # fmt: skip
    p.add_argument("--consul-token", default=os.environ.get("CHUTES_DEVCLUSTER_CONSUL_TOKEN"),
                   help="ACLs on, with this Consul management token (env CHUTES_DEVCLUSTER_CONSUL_TOKEN)")  # fmt: skip
    p.add_argument("--nomad-token-file", type=Path,
                   help="read the Nomad management token from this file (kept out of argv and environ)")  # fmt: skip
    p.add_argument("--consul-token-file", type=Path, help="read the Consul management token from this file")
    p.add_argument("--tls-cert", type=Path, help="serve both APIs over HTTPS with this PEM certificate")
    p.add_argument("--tls-key", type=Path, help="the certificate's PEM private key")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    p.add_argument("--session-min-ttl", default="10s", help="smallest Consul session TTL accepted (Consul: 10s)")
    p.add_argument(
        "--docker-driver",
        choices=["auto", "on", "off"],
        default=os.environ.get("CHUTES_DEVCLUSTER_DOCKER_DRIVER", "auto"),
        help="run docker tasks with podman: auto = when podman works (env CHUTES_DEVCLUSTER_DOCKER_DRIVER)",
    )
    p.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="pull from this registry without TLS verification (loopback registries always are)",
    )
    p.add_argument("--log-level", default=os.environ.get("CHUTES_DEVCLUSTER_LOG_LEVEL", "info"))
    return p


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
    args = build_parser().parse_args(argv)
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
