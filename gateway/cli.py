"""``chutes-gateway``: serve invocations (DESIGN.md, "Invocation addresses").

Every flag has an environment variable, so the same command runs under Nomad (``jobs_hcl``) and in tests.
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
from pathlib import Path

from chutes.core import envfile, signing, unique
from chutes.core.cluster_tls import ClusterTLSError, consul_address, preflight
from chutes.core.edge import limits as edge_limits
from chutes.core.logs import configure_logging
from chutes.core.portfile import write_port_file
from chutes.gateway import headers, metering
from chutes.gateway.app import Gateway
from chutes.gateway.config import SETTINGS, GatewaySettings
from chutes.gateway.discovery import consul_health
from chutes.gateway.scheduler_client import SchedulerClient
from chutes.gateway.server import Handler, HttpServer, Incoming

log = logging.getLogger("chutes.gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chutes-gateway", description="Route invocations to chute instances.")
    SETTINGS.add_flags(p)  # every flag with its variable and default: gateway/config.py
    edge_limits.add_arguments(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line with every setting resolved: the flag, else its variable, else its default."""
    args = _parser().parse_args(argv)
    values = SETTINGS.resolve(os.environ, args)
    if values["port"] is None:  # under Nomad the port comes from the job's port label
        values["port"] = int(os.environ.get("NOMAD_PORT_http") or 8080)  # noqa: SIM112 (Nomad spells it so)
    vars(args).update(values)
    return args


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    if not args.gateway_key:
        raise SystemExit("chutes-gateway: set --gateway-key or CHUTES_GATEWAY_KEY (an admin or gateway API key)")
    try:
        limits = edge_limits.from_args(args, os.environ)
    except edge_limits.LimitsError as exc:
        raise SystemExit(f"chutes-gateway: {exc}") from None
    if args.auth_failure_burst < 1 or not args.auth_failure_rate > 0:
        raise SystemExit("chutes-gateway: --auth-failure-burst must be >= 1 and --auth-failure-rate > 0")
    if not args.nomad_addr:
        log.warning("no --nomad-addr: every passing Consul registration of a chute's service gets its calls")
    return GatewaySettings(
        scheduler_url=args.scheduler_url,
        scheduler_key=args.gateway_key,
        consul_addr=args.consul_addr,
        consul_token=args.consul_token,
        domain=args.domain or None,
        auth_ttl=args.auth_ttl,
        route_ttl=args.route_ttl,
        hold_timeout=args.hold_timeout,
        hold_queue=args.hold_queue,
        wake_interval=args.wake_interval,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_attempts=args.max_attempts,
        read_timeout=args.read_timeout,
        watch_idle=args.watch_idle,
        metering_interval=args.metering_interval,
        limits=limits,
        auth_failure_burst=args.auth_failure_burst,
        auth_failure_rate=args.auth_failure_rate,
        nomad_addr=args.nomad_addr or None,
        nomad_token=args.nomad_token or None,
        nomad_namespace=args.nomad_namespace or None,
        spool_dir=str(args.spool_dir) if args.spool_dir else None,
        invalidation_key=args.invalidation_key or None,
    )


def access_logged(gateway: Gateway) -> Handler:
    """The gateway's handler, logging each request's client, method and path (``--access-log``)."""
    access = logging.getLogger("chutes.gateway.access")

    async def handle(request: Incoming) -> None:
        access.info("%s %s %s", request.client_ip, request.method, request.path)
        await gateway.handle(request)

    return handle


def missing_accelerators() -> list[str]:
    """The C accelerators of the per-call path this install did not build (docs/architecture.md)."""
    built = {"core/_hmac.c": signing.NATIVE, "core/_unique.c": unique.NATIVE,
             "gateway/_records.c": metering.NATIVE, "gateway/_headers.c": headers.NATIVE}  # fmt: skip
    return [name for name, native in built.items() if not native]


async def serve(settings: GatewaySettings, host: str, port: int, port_file: Path | None, access_log: bool) -> None:
    """Run the gateway until SIGINT or SIGTERM."""
    # A wrong CA or a missing client certificate stops the gateway here, with the variable to set.
    await preflight("consul", consul_address(settings.consul_addr))
    if settings.nomad_addr:  # the allocation check reads Nomad: the same start-up check
        await preflight("nomad", settings.nomad_addr)
    scheduler = SchedulerClient(settings.scheduler_url, settings.scheduler_key)
    consul = consul_health(settings.consul_addr, settings.consul_token)
    gateway = Gateway(settings, scheduler, consul.health, kv=consul.kv)
    handler = access_logged(gateway) if access_log else gateway.handle
    # The access log sees every request in the handler: with it on, no request takes the path around it.
    server = HttpServer(
        handler, settings.limits, settings.max_body_bytes, fast=None if access_log else gateway.serve_now
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        # First signal: stop accepting, finish the calls in flight, flush metering. Second: stop now.
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            server.abort()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    try:
        await gateway.start()
        await server.start(sock)
        log.info("chutes-gateway listening on %s:%d (scheduler %s, consul %s)", host, bound,
                 settings.scheduler_url, settings.consul_addr)  # fmt: skip
        missing = missing_accelerators()
        if missing:
            log.warning("C accelerators not built: %s; their Python forms serve (more CPU per call). Install gcc "
                        "and libssl-dev, then reinstall chutes-nomad", ", ".join(missing))  # fmt: skip
        if port_file is not None:
            write_port_file(port_file, bound)
        await stop.wait()
        await server.shutdown()
    finally:
        await gateway.close()
        await scheduler.close()
        with contextlib.suppress(Exception):
            await consul.close()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        envfile.load()  # secrets (the gateway key, tokens) from a file rather than the environment
    except envfile.EnvFileError as exc:
        raise SystemExit(f"chutes-gateway: {exc}") from None
    args = parse_args(argv)
    configure_logging(args.log_level)
    settings = settings_from(args)
    loop_factory = None
    with contextlib.suppress(ImportError):  # uvloop comes with uvicorn[standard]; the gateway runs without it too
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings, args.host, args.port, args.port_file, args.access_log))
    except KeyboardInterrupt:
        sys.exit(130)
    except ClusterTLSError as exc:
        sys.stderr.write(exc.render("chutes-gateway") + "\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
