"""Prometheus metrics of the agent: per-GPU gauges from the latest inventory, and the agent's own state.

The collector reads the agent's current values at scrape time, so a GPU that disappears from the inventory
disappears from the metrics too (no stale series). Served by prometheus_client's small threaded HTTP server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chutes.core.inventory import NodeInventory

MIB = 1024 * 1024


@dataclass
class AgentState:
    """What the daemon tells the metrics (plain attributes, written by the event loop, read by scrapes)."""

    inventory: NodeInventory | None = None
    consul_up: bool = False
    nomad_up: bool | None = None  # None: Nomad not configured
    heartbeats: int = 0
    kv_writes: int = 0
    kv_conflicts: int = 0
    duplicate_node_id: bool = False
    probe_errors: int = 0
    last_probe: float = 0.0


class AgentCollector(Collector):
    def __init__(self, state: AgentState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state
        inv = s.inventory
        labels = ["uuid", "model"]
        gauges = {
            "memory_used_bytes": GaugeMetricFamily("chutes_gpu_memory_used_bytes", "GPU memory in use", labels=labels),
            "memory_total_bytes": GaugeMetricFamily("chutes_gpu_memory_total_bytes", "GPU memory", labels=labels),
            "utilization": GaugeMetricFamily(
                "chutes_gpu_utilization_ratio", "Share of time a kernel ran (0-1)", labels=labels
            ),
            "temperature": GaugeMetricFamily("chutes_gpu_temperature_celsius", "GPU temperature", labels=labels),
            "power": GaugeMetricFamily("chutes_gpu_power_watts", "GPU power draw", labels=labels),
            "ecc": GaugeMetricFamily(
                "chutes_gpu_ecc_uncorrected_errors",
                "Volatile uncorrected ECC errors since the last driver load",
                labels=labels,
            ),
            "healthy": GaugeMetricFamily("chutes_gpu_healthy", "1 when the GPU is healthy, else 0", labels=labels),
        }
        info = GaugeMetricFamily(
            "chutes_gpu_info", "GPU identity (always 1)", labels=[*labels, "index", "name", "compute_capability"]
        )
        for g in inv.gpus if inv else []:
            lv = [g.uuid, g.model or "unknown"]
            info.add_metric([*lv, str(g.index), g.name, g.compute_capability or ""], 1)
            gauges["memory_total_bytes"].add_metric(lv, g.memory_total_mib * MIB)
            gauges["healthy"].add_metric(lv, 1 if g.healthy else 0)
            if g.memory_used_mib is not None:
                gauges["memory_used_bytes"].add_metric(lv, g.memory_used_mib * MIB)
            if g.utilization_pct is not None:
                gauges["utilization"].add_metric(lv, g.utilization_pct / 100)
            if g.temperature_c is not None:
                gauges["temperature"].add_metric(lv, g.temperature_c)
            if g.power_w is not None:
                gauges["power"].add_metric(lv, g.power_w)
            if g.ecc_errors is not None:
                gauges["ecc"].add_metric(lv, g.ecc_errors)
        yield info
        yield from gauges.values()

        yield GaugeMetricFamily("chutes_agent_gpus", "GPUs in the node's inventory", value=len(inv.gpus) if inv else 0)
        up = GaugeMetricFamily("chutes_agent_up", "1 when the agent reaches the service, else 0", labels=["service"])
        up.add_metric(["consul"], 1 if s.consul_up else 0)
        if s.nomad_up is not None:
            up.add_metric(["nomad"], 1 if s.nomad_up else 0)
        yield up
        yield CounterMetricFamily("chutes_agent_heartbeats", "TTL heartbeats sent to Consul", value=s.heartbeats)
        yield CounterMetricFamily("chutes_agent_kv_writes", "Inventory writes to Consul KV", value=s.kv_writes)
        yield CounterMetricFamily(
            "chutes_agent_kv_conflicts", "Times another writer was found on this node's KV key", value=s.kv_conflicts
        )
        yield GaugeMetricFamily(
            "chutes_agent_duplicate_node_id",
            "1 while another agent publishes the same node id (this agent has stepped back)",
            value=1 if s.duplicate_node_id else 0,
        )
        yield CounterMetricFamily("chutes_agent_probe_errors", "GPU readings that failed", value=s.probe_errors)
        yield GaugeMetricFamily(
            "chutes_agent_last_probe_timestamp_seconds", "Unix time of the last GPU reading", value=s.last_probe
        )


class MetricsServer:
    """``/metrics`` on ``host:port`` (port 0 picks a free port; see :attr:`port`)."""

    def __init__(self, state: AgentState, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(state))
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
