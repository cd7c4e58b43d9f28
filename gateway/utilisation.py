"""The gateway's utilisation report: the load it routes, per chute and instance, sent with each invocation batch.

The balancer already counts the calls this gateway has in flight on each instance, and discovery the calls it
holds for a chute with no instance yet; the report reads those counters when a batch is sent (never per
call). The calls completed since the previous report, and when the latest of them ended, come from the
batch's own invocation records (their chute and end time, kept beside each encoded record). The scheduler
keeps each gateway's latest report and its autoscaler sums them over gateways (``chutes.scheduler.utilisation``;
the body is in docs/api.md, "Invocation batches").
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chutes.gateway.discovery import ServiceWatch
from chutes.gateway.metering import Completion

# The Consul service of a chute is ``chute-<chute_id>`` (DESIGN.md, "Nomad job per chute").
SERVICE_PREFIX = "chute-"


def default_gateway_id() -> str:
    """``<hostname>-<pid>``: unique among the gateways running at once, readable in the scheduler's store."""
    return re.sub(r"[^A-Za-z0-9._:@-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:128]


class UtilisationReporter:
    """Builds the report sent with a batch; ``sent`` once the scheduler accepted it."""

    def __init__(
        self,
        watches: Callable[[], Mapping[str, ServiceWatch]],
        gateway_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gateway_id = gateway_id or default_gateway_id()
        self._watches = watches
        self._clock = clock
        self._since: float | None = None
        self._last_call: dict[str, float] = {}  # chute id -> when its latest call ended (of those reported)

    def report(self, completed: Sequence[Completion]) -> dict[str, Any]:
        """The snapshot to send with a batch of records, ``completed`` their (chute id, end time): every chute this
        gateway routes to, and those of the records."""
        chutes: dict[str, dict[str, Any]] = {}
        for name, watch in self._watches().items():
            if name.startswith(SERVICE_PREFIX):
                instances = {up.key: {"in_flight": up.in_flight} for up in watch.upstreams}
                chutes[name[len(SERVICE_PREFIX) :]] = {"held": watch.holders, "completed": 0, "instances": instances}
        for chute_id, ended in completed:
            if not chute_id:
                continue
            entry = chutes.setdefault(chute_id, {"held": 0, "completed": 0, "instances": {}})
            entry["completed"] += 1
            if ended > self._last_call.get(chute_id, 0.0):
                self._last_call[chute_id] = ended
        # Only chutes still reported are remembered: a chute no longer watched has been idle for a long while.
        self._last_call = {cid: t for cid, t in self._last_call.items() if cid in chutes}
        for chute_id, ended in self._last_call.items():
            chutes[chute_id]["last_call_at"] = ended
        return {"gateway_id": self.gateway_id, "at": self._clock(), "since": self._since, "chutes": chutes}

    def sent(self, report: Mapping[str, Any]) -> None:
        """The scheduler has ``report``: the next one counts completions from its time."""
        self._since = float(report["at"])
