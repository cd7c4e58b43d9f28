"""The scheduler's FastAPI application: store, clients, routers, error shapes and the leader loops.

``create_app(config)`` builds the app; its lifespan opens and migrates the store, bootstraps the admin key,
connects to Nomad and Consul, and (unless disabled) campaigns for leadership to run the control loops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

# Imported first: importing chutes.manifest before chutes.chute hits an import cycle in the SDK.
import chutes.chute  # noqa: F401
from chutes import __version__ as sdk_version
from chutes.core.cluster_tls import preflight
from chutes.core.consul_client import consul_aio
from chutes.core.edge.throttle import FailureThrottle
from chutes.scheduler import api
from chutes.scheduler.api import errors
from chutes.scheduler.api.instances import MAX_OUTPUT_BYTES
from chutes.scheduler.api.limits import BodyLimit
from chutes.scheduler.config import SchedulerConfig
from chutes.scheduler.deploy import stop_watches
from chutes.scheduler.events import EventHub
from chutes.scheduler.images.flow import stop_followers
from chutes.scheduler.invalidation import InvalidationPublisher
from chutes.scheduler.loops import LeaderSupervisor
from chutes.scheduler.metrics import RequestMetrics, SchedulerMetrics
from chutes.scheduler.nomad_api import NomadClient
from chutes.scheduler.secret_box import SecretBox, SecretsKeyError, box_from, sealed_context
from chutes.scheduler.services import Services
from chutes.scheduler.store import Store
from chutes.scheduler.store import chute_secrets as secrets_repo
from chutes.scheduler.store import users as users_repo
from chutes.scheduler.ui import install as install_dashboard

log = logging.getLogger(__name__)


async def bootstrap_admin(store: Store, config: SchedulerConfig) -> None:
    """Make sure CHUTES_ADMIN_KEY (if set) is an admin key of the admin user."""
    if not config.admin_key:
        return
    async with store.session() as session:
        await users_repo.ensure_admin(session, config.admin_username, config.admin_key)


async def open_services(config: SchedulerConfig, public_url: str, metrics: SchedulerMetrics) -> Services:
    # A wrong CA or a missing client certificate stops the scheduler here, with the variable to set.
    await preflight("nomad", config.nomad_addr)
    await preflight("consul", config.consul_addr)
    store = Store(config.resolved_database_url)
    metrics.instrument_engine(store.engine)
    try:
        box = box_from(config.secrets_key)
        await store.migrate()
        await bootstrap_admin(store, config)
        await check_secrets_key(store, box)
    except SecretsKeyError as exc:
        log.error("cannot start: %s\nHint: %s", exc, exc.hint)
        await store.close()
        raise
    except BaseException:
        await store.close()
        raise
    services = Services(
        config=config,
        store=store,
        events=EventHub(store, config.watch_interval_s),
        public_url=public_url,
        nomad=make_nomad(config),
        consul=make_consul(config),
        secrets=box,
        metrics=metrics,
    )
    services.invalidations = InvalidationPublisher(services.consul, config.invalidation_key, metrics)
    return services


async def check_secrets_key(store: Store, box: SecretBox | None) -> None:
    """Refuse to start with no key, or another key, than the stored secrets were sealed with."""
    async with store.session() as session:
        counts = await secrets_repo.key_ids(session)
        if not counts:
            return
        total = sum(counts.values())
        if box is None:
            raise SecretsKeyError(f"the store holds {total} chute secret(s) but CHUTES_SECRETS_KEY is not set")
        others = sorted(k for k in counts if k != box.key_id)
        if others:
            raise SecretsKeyError(
                f"CHUTES_SECRETS_KEY (key id {box.key_id}) is not the key {sum(counts[k] for k in others)} "
                f"stored secret(s) were sealed with (key id {', '.join(others)})",
                "start the scheduler with the CHUTES_SECRETS_KEY the secrets were created with",
            )
        sample = await secrets_repo.one_sealed_with(session, box.key_id)
    if sample is not None:
        box.open(sample.sealed, sealed_context(sample.chute_id, sample.name))  # the key really opens them


def make_nomad(config: SchedulerConfig) -> NomadClient:
    return NomadClient(
        config.nomad_addr, token=config.nomad_token, namespace=config.nomad_namespace, region=config.nomad_region
    )


def make_consul(config: SchedulerConfig) -> Any:
    """py-consul's asyncio client for CONSUL_HTTP_ADDR, TLS from CONSUL_CACERT & co. (no request until used)."""
    return consul_aio(config.consul_addr, config.consul_token)


async def close_services(services: Services) -> None:
    for client in (services.nomad, services.consul):
        close = getattr(client, "close", None)
        if close is not None:
            try:
                result: Any = close()
                if hasattr(result, "__await__"):
                    await result
            except Exception:  # closing is best effort at shutdown
                log.debug("closing %r failed", client, exc_info=True)
    await services.store.close()


def create_app(config: SchedulerConfig, *, public_url: str | None = None) -> FastAPI:
    """The scheduler app; ``public_url`` is what instances use to reach it (default from the config)."""
    url = public_url or config.resolved_public_url()
    metrics = SchedulerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(config, url, metrics)
        app.state.services = services
        supervisor = None
        if config.run_loops:
            supervisor = LeaderSupervisor(services)
            await supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await supervisor.stop()
            await stop_watches()
            await stop_followers()
            await services.close_view()
            if services.invalidations is not None:
                await services.invalidations.close()
            await close_services(services)

    app = FastAPI(
        title="chutes-scheduler",
        version=sdk_version,
        description="Control plane of chutes-nomad: users and keys, chutes, placement on GPU nodes, jobs.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.state.auth_throttle = FailureThrottle(config.auth_failure_burst, config.auth_failure_rate)
    app.add_middleware(RequestMetrics, metrics=metrics)
    # Uploads: a bundle (multipart, plus the manifest) or a job's outputs; JSON inputs are far smaller.
    app.add_middleware(
        BodyLimit,
        upload_limit=max(config.max_bundle_bytes, config.max_context_bytes, MAX_OUTPUT_BYTES) + 1024 * 1024,
        max_json_depth=config.max_json_depth,
    )
    for router in api.routers():
        app.include_router(router)
    install_dashboard(app)  # /ui: the web dashboard and its session cookie

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """Liveness (no authentication); says whether this scheduler currently leads."""
        services: Services | None = getattr(app.state, "services", None)
        return {"status": "ok", "leader": bool(services and services.is_leader), "version": sdk_version}

    return app
