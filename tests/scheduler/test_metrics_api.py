"""The scheduler's Prometheus metrics: who may read them, what they count, and the example Grafana dashboard
(every metric it queries exists in the processes that export it)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from chutes.gateway.metrics import GatewayMetrics
from chutes.runtime.limiter import ConcurrencyLimiter
from chutes.runtime.metrics import RuntimeMetrics
from chutes.scheduler.metrics import SchedulerMetrics
from tests.scheduler.server import make_config, serve
from tests.support.devcluster import devcluster

pytestmark = pytest.mark.timeout(60)

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
TOKEN = "prometheus-scrape-token-0123456789"


async def test_metrics_need_an_operator_and_count_requests_and_the_store(tmp_path: Path) -> None:
    async with serve(make_config(tmp_path, metrics_token=TOKEN)) as api:
        user = await api.new_user("alice")
        async with api.client() as anonymous, api.client(user) as alice, api.client(api.admin_key) as admin:
            assert (await anonymous.get("/metrics")).status_code == 401
            refused = await alice.get("/metrics")
            assert refused.status_code == 403 and "metrics token" in refused.json()["detail"]
            async with api.client("wrong-token") as wrong:
                assert (await wrong.get("/metrics")).status_code == 401
            assert (await alice.get("/v1/chutes")).status_code == 200
            as_admin = await admin.get("/metrics")
            async with api.client(TOKEN) as prometheus:
                scraped = await prometheus.get("/metrics")
    assert as_admin.status_code == 200 and scraped.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert samples[("chutes_scheduler_leader", ())] == 0  # run_loops is off in these tests
    listed = (("method", "GET"), ("route", "/v1/chutes"), ("status", "200"))
    assert samples[("chutes_scheduler_http_requests_total", listed)] == 1
    assert samples[("chutes_scheduler_http_requests_total", (("method", "GET"), ("route", "/metrics"),
                                                            ("status", "403")))] == 1  # fmt: skip
    timed = "chutes_scheduler_store_statement_duration_seconds_count"
    selects = [v for (name, labels), v in samples.items() if name == timed and ("statement", "select") in labels]
    assert selects and selects[0] > 0


def _exported(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bchutes_[a-z_]+", expr)}
    runtime = RuntimeMetrics(ConcurrencyLimiter(1))
    runtime.count("echo", 200)
    known = _exported(SchedulerMetrics().registry) | _exported(GatewayMetrics().registry)
    known |= {s.name for family in runtime.registry.collect() for s in family.samples}
    assert used, "no queries found"
    assert used <= known, sorted(used - known)


async def test_the_leader_reports_its_state_and_its_loop_ticks(tmp_path: Path) -> None:
    with devcluster(nodes=("gpu-a=l4:1",), local_node=False) as dc:
        config = make_config(
            tmp_path, nomad_addr=dc.nomad_addr, consul_addr=dc.consul_addr, run_loops=True, reconcile_interval_s=0.5,
            metrics_token=TOKEN,
        )  # fmt: skip
        async with serve(config) as api, api.client(TOKEN) as prometheus:

            async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                text = (await prometheus.get("/metrics")).text
                return {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }

            deadline = asyncio.get_running_loop().time() + 30
            ok = (("loop", "reconciler"), ("outcome", "ok"))
            while True:
                samples = await scraped()
                if samples.get(("chutes_scheduler_loop_ticks_total", ok), 0) >= 2:
                    break
                assert asyncio.get_running_loop().time() < deadline, "no reconciler ticks counted"
                await asyncio.sleep(0.2)
    assert samples[("chutes_scheduler_leader", ())] == 1
    assert samples[("chutes_scheduler_leadership_changes_total", (("change", "gained"),))] == 1
    assert samples[("chutes_scheduler_loop_tick_duration_seconds_count", (("loop", "reconciler"),))] >= 2
