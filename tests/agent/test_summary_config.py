"""Pure parts of the agent: node meta summaries, change fingerprints, addresses, durations, backoff, metrics."""

from __future__ import annotations

import logging
import urllib.request

import pytest

from chutes.agent.backoff import Backoff, LinkState
from chutes.agent.config import ConfigError, Intervals, consul_duration, parse_address
from chutes.agent.metrics import AgentState, MetricsServer
from chutes.agent.sources import build_inventory
from chutes.agent.sources.base import GPUReading, canonicalize
from chutes.agent.summary import fingerprint, nomad_meta, service_meta
from chutes.core.inventory import GPUInfo, NodeInventory, simulated_gpus


def inventory(gpus: list[GPUInfo]) -> NodeInventory:
    return build_inventory(GPUReading(gpus=gpus, driver_version="550", cuda_version="12.4"), "n1", "host", now=1.0)


def test_nomad_meta_for_uniform_mixed_unknown_and_empty_nodes() -> None:
    assert nomad_meta(inventory(simulated_gpus("n1", "h100_sxm", 8))) == {
        "chutes_gpu_model": "h100_sxm",
        "chutes_gpu_count": "8",
        "chutes_gpu_vram_gb": "80",
    }
    mixed = simulated_gpus("n1", "l40s", 1) + simulated_gpus("n1", "a100_sxm", 2, start_index=1)
    assert nomad_meta(inventory(mixed)) == {
        "chutes_gpu_model": "a100_sxm,l40s",  # set_contains_any splits on commas
        "chutes_gpu_count": "3",
        "chutes_gpu_vram_gb": "48",
    }
    t4 = canonicalize(GPUInfo(index=0, uuid="GPU-x", name="Tesla T4", memory_total_mib=15360))
    assert nomad_meta(inventory([t4]))["chutes_gpu_model"] == "unknown"
    assert nomad_meta(inventory([t4]))["chutes_gpu_vram_gb"] == "16"
    assert nomad_meta(inventory([])) == {"chutes_gpu_model": "none", "chutes_gpu_count": "0", "chutes_gpu_vram_gb": "0"}


def test_service_meta_counts_healthy_gpus() -> None:
    g = simulated_gpus("n1", "h100_sxm", 2)
    g[1] = canonicalize(g[1].model_copy(update={"ecc_errors": 1}))
    meta = service_meta(inventory(g), "simulated")
    assert meta["gpus_healthy"] == "1" and meta["gpu_count"] == "2" and meta["gpu_model"] == "h100_sxm"


def test_fingerprint_ignores_timestamps_and_volatile_readings_only() -> None:
    base = inventory(simulated_gpus("n1", "h100_sxm", 2))
    busy = base.model_copy(
        update={
            "updated_at": 99.0,
            "gpus": [g.model_copy(update={"utilization_pct": 90.0, "temperature_c": 70.0, "memory_used_mib": 5,
                                          "memory_free_mib": 1, "power_w": 500.0}) for g in base.gpus],
        }
    )  # fmt: skip
    assert fingerprint(busy) == fingerprint(base)
    broken = base.model_copy(update={"gpus": [base.gpus[0], base.gpus[1].model_copy(update={"healthy": False})]})
    assert fingerprint(broken) != fingerprint(base)
    assert fingerprint(base.model_copy(update={"nomad_node_id": "x"})) != fingerprint(base)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("127.0.0.1:8500", "http://127.0.0.1:8500"),
        ("http://consul.service:8500", "http://consul.service:8500"),
        ("https://consul.example.com", "https://consul.example.com:443"),
        ("consul", "http://consul:8500"),
        ("http://[::1]:8501/", "http://[::1]:8501"),
    ],
)
def test_parse_address(text: str, url: str) -> None:
    assert parse_address(text, 8500, "CONSUL_HTTP_ADDR").url == url


@pytest.mark.parametrize("text", ["", "ftp://x:1", "http://x:99999", "http://x:8500/v1", "http://:8500"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="CONSUL_HTTP_ADDR"):
        parse_address(text, 8500, "CONSUL_HTTP_ADDR")


def test_consul_durations_and_intervals() -> None:
    assert consul_duration(15) == "15s"
    assert consul_duration(60.0) == "60s"
    assert consul_duration(0.5) == "500ms"
    assert consul_duration(1.25) == "1250ms"
    Intervals().validate()
    with pytest.raises(ConfigError, match="shorter than --ttl"):
        Intervals(heartbeat=15, ttl=15).validate()
    with pytest.raises(ConfigError, match="--kv-refresh"):
        Intervals(kv_refresh=0).validate()


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    high = Backoff(base=1, cap=10, rng=lambda: 1.0)
    assert [high.next_delay() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    low = Backoff(base=1, cap=10, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(5)] == [0.5, 1, 2, 4, 5]
    high.reset()
    assert high.next_delay() == 1


def test_link_state_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    link = LinkState("Consul", "http://c:8500", logging.getLogger("t"))
    link.ok()
    for _ in range(5):
        link.failed(ConnectionRefusedError("refused"))
    link.ok()
    link.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Consul reachable at http://c:8500",
        "Consul unreachable at http://c:8500 (ConnectionRefusedError: refused); retrying with backoff, "
        "still probing GPUs",
        "Consul reachable again at http://c:8500 after 5 failed attempt(s)",
    ]


def test_metrics_per_gpu_labelled_by_uuid_and_model() -> None:
    gpus = simulated_gpus("n1", "h100_sxm", 2)
    gpus[1] = canonicalize(gpus[1].model_copy(update={"ecc_errors": 3, "utilization_pct": 50.0}))
    state = AgentState(inventory=inventory(gpus), consul_up=True, kv_conflicts=2, duplicate_node_id=True)
    server = MetricsServer(state, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.close()
    u0, u1 = gpus[0].uuid, gpus[1].uuid
    assert f'chutes_gpu_healthy{{model="h100_sxm",uuid="{u0}"}} 1.0' in text
    assert f'chutes_gpu_healthy{{model="h100_sxm",uuid="{u1}"}} 0.0' in text
    assert f'chutes_gpu_ecc_uncorrected_errors{{model="h100_sxm",uuid="{u1}"}} 3.0' in text
    assert f'chutes_gpu_utilization_ratio{{model="h100_sxm",uuid="{u1}"}} 0.5' in text
    assert f'chutes_gpu_memory_used_bytes{{model="h100_sxm",uuid="{u0}"}} 0.0' in text
    assert f'chutes_gpu_temperature_celsius{{model="h100_sxm",uuid="{u0}"}} 35.0' in text
    assert f'chutes_gpu_power_watts{{model="h100_sxm",uuid="{u0}"}} 60.0' in text
    assert 'chutes_agent_up{service="consul"} 1.0' in text
    assert 'service="nomad"' not in text
    assert "chutes_agent_kv_conflicts_total 2.0" in text
    assert "chutes_agent_duplicate_node_id 1.0" in text
