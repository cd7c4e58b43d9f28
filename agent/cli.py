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

from chutes.core import envfile
from chutes.core.cluster_tls import consul_address, preflight
from chutes.core.errors import HintedError
from chutes.core.inventory import NodeInventory
from chutes.core.logs import configure_logging

from .config import SETTINGS, AgentConfig, ConfigError, Intervals, parse_address
from .daemon import Agent, resolve_node
from .nomad_link import NomadLink
from .sources import NvmlSource, SimulatedSource, SimulationError, build_inventory, describe_health, parse_specs
from .sources.base import GPUSource

log = logging.getLogger("chutes.agent")
DEFAULTS = Intervals()


SOURCE_FLAGS = ("simulate", "simulate_file", "node_id", "nomad_addr", "nomad_token", "nomad_node_id")
INTERVAL_FLAGS = ("heartbeat", "ttl", "deregister_after", "kv_refresh", "probe_interval", "backoff_cap")


def _source_flags(p: argparse.ArgumentParser) -> None:
    SETTINGS.add_flags(p.add_argument_group("GPU source (default: NVML)"), SOURCE_FLAGS[:2])
    SETTINGS.add_flags(p, SOURCE_FLAGS[2:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chutes-agent", description="GPU node agent of chutes-nomad.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{probe,run}")

    probe = sub.add_parser("probe", help="print this node's GPU inventory once")
    probe.add_argument("--json", action="store_true", help="print the inventory as JSON (as published to Consul KV)")
    _source_flags(probe)

    run = sub.add_parser("run", help="run the agent daemon")
    _source_flags(run)
    SETTINGS.add_flags(run, ("consul_addr", "consul_token"))
    SETTINGS.add_flags(run.add_argument_group("intervals (seconds)"), INTERVAL_FLAGS)
    SETTINGS.add_flags(run, ("metrics_port", "metrics_host", "ports_file", "log_level"))
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    # The Consul address and token keep their own resolution (CONSUL_HTTP_SSL): only the flags are taken here.
    flags = SETTINGS.from_args(args)[0]
    values = SETTINGS.resolve(os.environ, args)
    simulate: list[str] = values["simulate"] or []
    simulate_file = values["simulate_file"]
    if simulate and simulate_file:
        raise ConfigError("give either --simulate or --simulate-file, not both")
    nomad_addr = values["nomad_addr"]
    intervals = Intervals(
        heartbeat=values["heartbeat"],
        ttl=values["ttl"],
        deregister_after=values["deregister_after"],
        kv_refresh=values["kv_refresh"],
        probe=values["probe_interval"],
        backoff_cap=values["backoff_cap"],
    )
    intervals.validate()
    return AgentConfig(
        node_id=values["node_id"],
        hostname=socket.gethostname(),
        consul=parse_address(consul_address(flags.get("consul_addr")), 8500, "CONSUL_HTTP_ADDR"),
        consul_token=values["consul_token"],
        nomad=parse_address(nomad_addr, 4646, "NOMAD_ADDR") if nomad_addr else None,
        nomad_token=values["nomad_token"],
        nomad_node_id=values["nomad_node_id"],
        simulate=parse_specs(simulate),
        simulate_file=simulate_file,
        intervals=intervals,
        metrics_host=values["metrics_host"],
        metrics_port=values["metrics_port"],
        ports_file=values["ports_file"],
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
    configure_logging((args.log_level or "INFO") if args.command == "run" else "WARNING")
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
