"""The scheduler's shared services: what routers, the deploy flow and the leader loops work with.

Built once by the app's lifespan (``app.py``); routers reach it through ``api.deps.get_services`` and loops
receive it as their argument. ``extras`` lets other parts (autoscaler, metering) hang their own state here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chutes.scheduler.cluster_view import ClusterView
from chutes.scheduler.config import SchedulerConfig
from chutes.scheduler.events import EventHub
from chutes.scheduler.invalidation import InvalidationPublisher
from chutes.scheduler.metrics import SchedulerMetrics
from chutes.scheduler.nomad_api import NomadClient
from chutes.scheduler.secret_box import SecretBox
from chutes.scheduler.store import Store


@dataclass
class Services:
    config: SchedulerConfig
    store: Store
    events: EventHub
    public_url: str
    nomad: NomadClient
    consul: Any  # py-consul's asyncio client (untyped)
    secrets: SecretBox | None = None  # seals chute secrets at rest (CHUTES_SECRETS_KEY); None: none can be stored
    is_leader: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    # Set by the app (it needs the Consul client); None where nothing follows the notices (unit tests).
    invalidations: InvalidationPublisher | None = None
    _view: ClusterView | None = field(default=None, repr=False)

    @property
    def view(self) -> ClusterView:
        """The cluster view every part of this process reads (created on first use, followed from then on)."""
        if self._view is None:
            self._view = ClusterView(
                self.consul,
                self.nomad,
                wait_s=self.config.view_wait_s,
                max_age_s=self.config.view_max_age_s,
                max_backoff_s=self.config.loop_max_backoff_s,
            )
        return self._view

    async def close_view(self) -> None:
        if self._view is not None:
            await self._view.stop()

    async def announce_change(
        self,
        *,
        routes: Iterable[tuple[str, str]] = (),
        keys: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> None:
        """Tell the gateways that these routes, API keys (sha256) or users' identities changed."""
        if self.invalidations is not None:
            await self.invalidations.publish(routes=routes, keys=keys, users=users)
