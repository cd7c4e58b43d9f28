"""``chutes-agent``: ``probe`` prints this node's GPU inventory once; ``run`` is the daemon.

Flags fall back to the usual environment: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, NOMAD_ADDR, NOMAD_TOKEN,
CHUTES_NODE_ID, CHUTES_NOMAD_NODE_ID, CHUTES_AGENT_SIMULATE, CHUTES_AGENT_SIMULATE_FILE.
Exit status: 0 done (``run``: stopped by SIGTERM/SIGINT), 1 no NVIDIA GPU found (``probe``), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from chutes import envfile
from chutes.cluster_tls import consul_address, preflight
from chutes.core.errors import HintedError
from chutes.core.logs import configure_logging
from chutes.inventory import NodeInventory

from .config import AgentConfig, ConfigError, Intervals, env, parse_address
from .daemon import Agent, resolve_node
from .nomad_link import NomadLink
from .sources import NvmlSource, SimulatedSource, SimulationError, build_inventory, describe_health, parse_specs
from .sources.base import GPUSource

log = logging.getLogger("chutes.agent")
DEFAULTS = Intervals()


def _source_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GPU source (default: NVML)")
    g.add_argument(
        "--simulate",
        action="append",
        default=[],
        metavar="MODEL[:COUNT]",
        help="simulate catalog GPUs instead of reading NVML, e.g. h100_sxm:8 (repeat for several groups) "
        "[env CHUTES_AGENT_SIMULATE]",
    )
    g.add_argument(
        "--simulate-file",
        type=Path,
        metavar="PATH",
        help="simulate the GPUs described in a JSON/YAML file, re-read when it changes "
        "[env CHUTES_AGENT_SIMULATE_FILE]",
    )
    p.add_argument("--node-id", help="this node's id [env CHUTES_NODE_ID; default: Nomad node name, else hostname]")
    p.add_argument("--nomad-addr", help="Nomad HTTP API [env NOMAD_ADDR; unset: no Nomad node meta]")
    p.add_argument("--nomad-token", help="Nomad ACL token [env NOMAD_TOKEN]")
    p.add_argument("--nomad-node-id", help="this host's Nomad node ID [env CHUTES_NOMAD_NODE_ID; default: looked up]")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is between 0 and 65535 (0: any free port)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chutes-agent", description="GPU node agent of chutes-nomad.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{probe,run}")

    probe = sub.add_parser("probe", help="print this node's GPU inventory once")
    probe.add_argument("--json", action="store_true", help="print the inventory as JSON (as published to Consul KV)")
    _source_flags(probe)

    run = sub.add_parser("run", help="run the agent daemon")
    _source_flags(run)
    run.add_argument("--consul-addr", help="Consul HTTP API [env CONSUL_HTTP_ADDR; default 127.0.0.1:8500]")
    run.add_argument("--consul-token", help="Consul ACL token [env CONSUL_HTTP_TOKEN]")
    t = run.add_argument_group("intervals (seconds)")
    t.add_argument("--heartbeat", type=_seconds, default=DEFAULTS.heartbeat, help="TTL check refresh (default 5)")
    t.add_argument("--ttl", type=_seconds, default=DEFAULTS.ttl, help="TTL of the Consul checks (default 15)")
    t.add_argument(
        "--deregister-after",
        type=_seconds,
        default=DEFAULTS.deregister_after,
        help="Consul removes the service after it is critical this long (default 60)",
    )
    t.add_argument(
        "--kv-refresh",
        type=_seconds,
        default=DEFAULTS.kv_refresh,
        help="rewrite the KV inventory and Nomad meta at least this often (default 60)",
    )
    t.add_argument("--probe-interval", type=_seconds, default=DEFAULTS.probe, help="GPU reading period (default 10)")
    t.add_argument(
        "--backoff-cap",
        type=_seconds,
        default=DEFAULTS.backoff_cap,
        help="longest wait between retries to an unreachable Consul or Nomad (default 30)",
    )
    run.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics on this port (0: any free port)")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics server (default 127.0.0.1)")
    run.add_argument("--ports-file", type=Path, help="write {pid, node_id, metrics} as JSON here once started")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    simulate = list(args.simulate) or ([e] if (e := env("CHUTES_AGENT_SIMULATE")) else [])
    simulate_file = args.simulate_file or (Path(f) if (f := env("CHUTES_AGENT_SIMULATE_FILE")) else None)
    if simulate and simulate_file:
        raise ConfigError("give either --simulate or --simulate-file, not both")
    nomad_addr = args.nomad_addr or env("NOMAD_ADDR")
    intervals = Intervals(
        heartbeat=getattr(args, "heartbeat", DEFAULTS.heartbeat),
        ttl=getattr(args, "ttl", DEFAULTS.ttl),
        deregister_after=getattr(args, "deregister_after", DEFAULTS.deregister_after),
        kv_refresh=getattr(args, "kv_refresh", DEFAULTS.kv_refresh),
        probe=getattr(args, "probe_interval", DEFAULTS.probe),
        backoff_cap=getattr(args, "backoff_cap", DEFAULTS.backoff_cap),
    )
    intervals.validate()
    return AgentConfig(
        node_id=args.node_id or env("CHUTES_NODE_ID"),
        hostname=socket.gethostname(),
        consul=parse_address(consul_address(getattr(args, "consul_addr", None)), 8500, "CONSUL_HTTP_ADDR"),
        consul_token=getattr(args, "consul_token", None) or env("CONSUL_HTTP_TOKEN"),
        nomad=parse_address(nomad_addr, 4646, "NOMAD_ADDR") if nomad_addr else None,
        nomad_token=args.nomad_token or env("NOMAD_TOKEN"),
        nomad_node_id=args.nomad_node_id or env("CHUTES_NOMAD_NODE_ID"),
        simulate=parse_specs(simulate),
        simulate_file=simulate_file,
        intervals=intervals,
        metrics_host=getattr(args, "metrics_host", "127.0.0.1"),
        metrics_port=getattr(args, "metrics_port", None),
        ports_file=getattr(args, "ports_file", None),
    )


def make_source(config: AgentConfig, node_id: str) -> GPUSource:
    if config.simulate or config.simulate_file:
        return SimulatedSource(node_id, config.simulate, config.simulate_file)
    return NvmlSource()


async def _identify(config: AgentConfig, timeout_s: float) -> tuple[str, str | None]:
    if config.nomad is None or config.node_id is not None:
        return await resolve_node(config, None)
    nomad = NomadLink(config.nomad, config.nomad_token, timeout_s=timeout_s)
    try:
        return await resolve_node(config, nomad)
    finally:
        await nomad.close()


def _print_table(inv: NodeInventory) -> None:
    print(
        f"node {inv.node_id} (host {inv.hostname}), driver {inv.driver_version or '-'}, CUDA {inv.cuda_version or '-'}"
    )
    for g in inv.gpus:
        mem = f"{g.memory_used_mib if g.memory_used_mib is not None else '?'}/{g.memory_total_mib} MiB"
        temp = f"{g.temperature_c:g}C" if g.temperature_c is not None else "-"
        power = f"{g.power_w:g}W" if g.power_w is not None else "-"
        util = f"{g.utilization_pct:g}%" if g.utilization_pct is not None else "-"
        state = "healthy" if g.healthy else f"UNHEALTHY: {g.problem}"
        model = g.model or "unknown"
        print(f"  [{g.index}] {model:<14} {g.name:<32} {mem:>18} {util:>5} {temp:>5} {power:>7}  {g.uuid}  {state}")


def _probe(config: AgentConfig, as_json: bool) -> int:
    node_id, nomad_node_id = asyncio.run(_identify(config, timeout_s=3.0))
    source = make_source(config, node_id)
    try:
        reading = source.read()
    finally:
        source.close()
    inv = build_inventory(reading, node_id, config.hostname, nomad_node_id)
    if as_json:
        print(inv.model_dump_json(indent=2))
    elif reading.gpus:
        _print_table(inv)
    if reading.error is not None:
        print(f"chutes-agent: {reading.error}", file=sys.stderr)
        return 1
    ok, summary = describe_health(reading)
    if not ok:
        print(f"chutes-agent: {summary}", file=sys.stderr)
    return 0


async def _run(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A wrong CA or a missing client certificate stops the agent here, with the variable to set (not a retry loop).
    await preflight("consul", config.consul.url)
    if config.nomad is not None:
        await preflight("nomad", config.nomad.url)
    node_id, nomad_node_id = await _identify(config, timeout_s=5.0)
    source = make_source(config, node_id)
    agent = Agent(config, source, node_id=node_id, nomad_node_id=nomad_node_id)
    await agent.run(stop)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "WARNING"))
    try:
        envfile.load()  # tokens from a 0600 file rather than the environment (chutes dev)
        config = _config(args)
        if args.command == "probe":
            return _probe(config, args.json)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_run(config))
        return 0
    except HintedError as exc:  # ConfigError, ClusterTLSError
        print(exc.render("chutes-agent"), file=sys.stderr)
        return 2
    except (SimulationError, envfile.EnvFileError) as exc:
        print(f"chutes-agent: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `chutes-agent probe --json | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
