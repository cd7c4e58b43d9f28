"""``chutes-scheduler``: ``serve`` (the default) runs the API and the leader loops; ``create-admin`` prints a key;
``secrets-key`` prints a new ``CHUTES_SECRETS_KEY``.

Configuration comes from the environment and flags, which win; both are declared once, in ``config.SETTINGS``. With
``--port 0`` the kernel picks a free port; the bound address is printed and, with ``--port-file``, written
to that file once the server accepts connections (tests wait for it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from chutes.core import envfile
from chutes.core.edge import limits as edge_limits
from chutes.core.edge.limits import EdgeLimits
from chutes.core.logs import configure_logging
from chutes.core.portfile import write_port_file
from chutes.scheduler.config import SETTINGS, ConfigError, SchedulerConfig, load_config

log = logging.getLogger("chutes.scheduler")


# Flags of `serve`, in the order --help lists them; their text, variable and default come from config.SETTINGS.
SERVE_FLAGS = (
    "host",
    "port",
    "port_file",
    "public_url",
    "task_driver",
    "container_scheduler_host",
    "datacenters",
    "reconcile_interval_s",
    "check_interval_s",
    "healthy_deadline_s",
    "leader_ttl_s",
    "gateway_url",
    "run_loops",
)
# Flags `serve` and `create-admin` share.
COMMON_FLAGS = ("database_url", "data_dir", "nomad_addr", "consul_addr", "log_level")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chutes-scheduler", description="The chutes-nomad control plane.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the API server and the leader loops (default)")
    SETTINGS.add_flags(serve, SERVE_FLAGS)
    edge_limits.add_arguments(serve)
    SETTINGS.add_flags(serve, ("dev_adopt_users",))
    admin = sub.add_parser("create-admin", help="create (or promote) an admin user and print a new key")
    for p in (serve, admin):
        SETTINGS.add_flags(p, COMMON_FLAGS)
    SETTINGS.add_flags(admin, ("admin_username",))
    sub.add_parser("secrets-key", help="print a new CHUTES_SECRETS_KEY (the key that seals chute secrets)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return SETTINGS.from_args(args)[0]


# The gateway's pool keeps connections to the scheduler for 30 s: stay open longer than that, so that it
# never reuses a connection the scheduler is closing.
SCHEDULER_LIMITS = EdgeLimits(idle_timeout=75.0)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_config(app: Any, config: SchedulerConfig, limits: EdgeLimits = SCHEDULER_LIMITS) -> Any:
    """uvicorn serving the scheduler's app through the edge protocol (``chutes.core.edge``)."""
    import uvicorn

    from chutes.core.edge.protocol import EdgeGuard

    guard = EdgeGuard(limits, "scheduler", fd_fraction=0.8)
    return uvicorn.Config(
        app,
        http=guard.protocol(),
        log_level=config.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


async def _serve(config: SchedulerConfig, limits: EdgeLimits = SCHEDULER_LIMITS) -> None:
    from chutes.core.cluster_tls import ClusterTLSError, preflight
    from chutes.scheduler.app import create_app
    from chutes.scheduler.secret_box import SecretsKeyError, box_from

    try:  # a malformed secrets key, a wrong CA or a missing client certificate: stop before binding, say what to set
        box_from(config.secrets_key)
        await preflight("nomad", config.nomad_addr)
        await preflight("consul", config.consul_addr)
    except (ClusterTLSError, SecretsKeyError) as exc:
        print(exc.render("chutes-scheduler: cannot start"), file=sys.stderr)
        raise SystemExit(2) from None
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    public_url = config.resolved_public_url(port)
    app = create_app(config, public_url=public_url)
    from chutes.core.server import GracefulServer

    server = GracefulServer(server_config(app, config, limits))

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(f"chutes-scheduler listening on http://{config.host}:{port} (public URL {public_url})", flush=True)
        if config.port_file is not None:
            write_port_file(config.port_file, port)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        announcer.cancel()
        sock.close()
    if not server.started:
        raise SystemExit(1)


async def _create_admin(config: SchedulerConfig) -> str:
    from chutes.scheduler.store import Store
    from chutes.scheduler.store import users as users_repo

    store = Store(config.resolved_database_url)
    try:
        await store.migrate()
        async with store.session() as session:
            _, key = await users_repo.ensure_admin(session, config.admin_username)
    finally:
        await store.close()
    assert key is not None
    return key


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "create-admin", "secrets-key", "-h", "--help"):
        argv.insert(0, "serve")
    args = _parser().parse_args(argv)
    if args.command == "secrets-key":
        from chutes.scheduler.secret_box import generate_key

        print(generate_key())
        return
    try:
        envfile.load()  # secrets (the admin key, cluster tokens) from a file rather than the environment
        config = load_config(**_overrides(args))
        limits = edge_limits.from_args(args, os.environ, SCHEDULER_LIMITS) if args.command == "serve" else None
    except ConfigError as exc:
        print(exc.render("chutes-scheduler"), file=sys.stderr)
        raise SystemExit(2) from None
    except (envfile.EnvFileError, edge_limits.LimitsError) as exc:
        print(f"chutes-scheduler: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # alembic logs a line per plugin, httpx/httpcore one per Nomad log request
    configure_logging(config.log_level, quiet=("alembic.runtime.plugins", "httpx", "httpcore"))
    try:
        if args.command == "create-admin":
            key = asyncio.run(_create_admin(config))
            print(f"admin user {config.admin_username!r}; API key (shown once): {key}")
            return
        asyncio.run(_serve(config, limits or SCHEDULER_LIMITS))
    except OSError as exc:
        print(f"chutes-scheduler: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
