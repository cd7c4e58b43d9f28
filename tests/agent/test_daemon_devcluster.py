"""The agent daemon against the devcluster's Consul and Nomad APIs, as a real subprocess with short intervals.

Each test starts a devcluster with a simulated node ``gpu-a`` (8 × H100 SXM) and an agent simulating the same
node, then checks what Consul, Consul KV, Nomad and the agent's metrics show.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chutes.core.inventory import NodeInventory
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until

from .agent_process import AGENT, FAST, AgentProcess

pytestmark = pytest.mark.timeout(90)
NODE = "gpu-a"
SERVICE_ID = f"chutes-agent-{NODE}"


@pytest.fixture
def dc() -> Iterator[DevclusterHandle]:
    with devcluster(nodes=[f"{NODE}=h100_sxm:8"]) as handle:
        yield handle


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def start_agent(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path, *args: str, name: str = "agent"
) -> AgentProcess:
    agent = AgentProcess(
        tmp_path,
        name,
        [
            "--node-id", NODE, "--consul-addr", dc.consul_addr, "--nomad-addr", dc.nomad_addr,
            "--metrics-port", "0", *FAST, *args,
        ],
    )  # fmt: skip
    agents.append(agent)
    return agent


def checks(dc: DevclusterHandle) -> dict[str, dict[str, Any]]:
    _, items = dc.consul().health.checks("chutes-agent")
    return {c["CheckID"]: c for c in items if c["ServiceID"] == SERVICE_ID}


def statuses(dc: DevclusterHandle) -> dict[str, str]:
    return {cid.rsplit(":", 1)[1]: c["Status"] for cid, c in checks(dc).items()}


def kv_inventory(dc: DevclusterHandle) -> NodeInventory | None:
    _, item = dc.consul().kv.get(f"chutes/nodes/{NODE}")
    return None if item is None else NodeInventory.model_validate_json(item["Value"])


def nomad_node(dc: DevclusterHandle) -> dict[str, Any]:
    n = dc.nomad()
    node_id = next(x["ID"] for x in n.nodes.get_nodes() if x["Name"] == NODE)
    return n.node.get_node(node_id)  # type: ignore[no-any-return]


def all_passing(dc: DevclusterHandle) -> bool:
    return statuses(dc) == {"alive": "passing", "gpus": "passing"}


def test_registers_passing_publishes_the_inventory_and_node_meta(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8")
    poll_until(lambda: all_passing(dc), "both checks passing")

    _, services = dc.consul().catalog.service("chutes-agent")
    (svc,) = [s for s in services if s["ServiceID"] == SERVICE_ID]
    assert svc["ServiceMeta"]["gpu_model"] == "h100_sxm"
    assert svc["ServiceMeta"]["gpu_count"] == "8"
    assert svc["ServiceMeta"]["gpu_vram_gb"] == "80"
    assert svc["ServicePort"] == agent.ports["metrics"]
    registered = checks(dc)
    assert {c["Type"] for c in registered.values()} == {"ttl"}
    assert registered[f"{SERVICE_ID}:alive"]["Output"] == "agent alive, 8 GPU(s)"
    assert registered[f"{SERVICE_ID}:gpus"]["Output"] == "8 GPU(s) healthy"

    # KV holds exactly what `chutes-agent probe` prints for this node, plus the Nomad node ID.
    node = nomad_node(dc)
    inv = poll_until(lambda: (i := kv_inventory(dc)) and i.nomad_node_id and i, "the inventory with the Nomad node ID")
    probe = subprocess.run(
        [AGENT, "probe", "--json", "--simulate", "h100_sxm:8", "--node-id", NODE],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    expected = NodeInventory.model_validate_json(probe.stdout)
    assert inv.nomad_node_id == node["ID"]
    assert inv.model_dump(exclude={"updated_at", "nomad_node_id"}) == expected.model_dump(
        exclude={"updated_at", "nomad_node_id"}
    )
    # The agent's GPU UUIDs are the devcluster's Nomad device instance IDs for the same node.
    device_ids = [i["ID"] for group in node["NodeResources"]["Devices"] for i in group["Instances"]]
    assert sorted(device_ids) == sorted(g.uuid for g in inv.gpus)

    meta = poll_until(lambda: (m := nomad_node(dc)["Meta"]).get("chutes_gpu_model") and m, "node meta")
    assert (meta["chutes_gpu_model"], meta["chutes_gpu_count"], meta["chutes_gpu_vram_gb"]) == ("h100_sxm", "8", "80")

    samples = agent.metrics()
    healthy = {k: v for k, v in samples.items() if k.startswith("chutes_gpu_healthy{")}
    assert len(healthy) == 8 and set(healthy.values()) == {1.0}
    assert all('model="h100_sxm"' in k for k in healthy)
    assert samples['chutes_agent_up{service="consul"}'] == 1.0
    assert samples['chutes_agent_up{service="nomad"}'] == 1.0
    assert samples["chutes_agent_kv_conflicts_total"] == 0.0


def test_a_stopped_heartbeat_turns_critical_within_the_ttl(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8")
    poll_until(lambda: all_passing(dc), "both checks passing")
    agent.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    poll_until(lambda: statuses(dc).get("alive") == "critical", "the liveness check to turn critical", timeout=10)
    elapsed = time.monotonic() - stopped_at
    assert elapsed <= 2 + 2, f"critical only after {elapsed:.1f}s with a 2s TTL"  # TTL + reaper tick + polling
    agent.signal(signal.SIGCONT)
    poll_until(lambda: all_passing(dc), "passing again after SIGCONT", timeout=10)


def test_sigterm_deregisters_and_exits_0(dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path) -> None:
    agent = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8")
    poll_until(lambda: all_passing(dc), "both checks passing")
    poll_until(lambda: kv_inventory(dc), "the inventory in KV")
    assert agent.stop() == 0
    _, services = dc.consul().catalog.service("chutes-agent")
    assert [s for s in services if s["ServiceID"] == SERVICE_ID] == []
    assert checks(dc) == {}
    assert "deregistered service chutes-agent-gpu-a" in agent.log()
    assert kv_inventory(dc) is not None  # the hardware description stays


@pytest.mark.slow
def test_survives_devcluster_restarts_and_outages(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8")
    poll_until(lambda: all_passing(dc), "both checks passing")

    # A restart that keeps Consul's state (same ports, same data dir).
    dc.restart()
    poll_until(lambda: "Consul reachable again" in agent.log(), "the agent back in touch", timeout=20)
    poll_until(lambda: all_passing(dc), "passing after the restart", timeout=20)

    # An outage that loses everything: the agent must register again and rewrite KV and node meta.
    dc.stop()
    time.sleep(3)  # several heartbeats fail meanwhile
    assert agent.proc.poll() is None, "the agent must not exit when Consul and Nomad are down"
    shutil.rmtree(dc.data_dir)
    dc.start()
    poll_until(lambda: all_passing(dc), "passing after a restart without state", timeout=20)
    poll_until(lambda: kv_inventory(dc), "the inventory rewritten", timeout=10)
    poll_until(lambda: nomad_node(dc)["Meta"].get("chutes_gpu_count") == "8", "the node meta set again", timeout=10)

    log = agent.log()
    # One line per change of state, not one per failed attempt.
    assert log.count("Consul unreachable") == 2, log
    assert log.count("Consul reachable again") == 2, log
    assert log.count("Nomad unreachable") == log.count("Nomad reachable again") >= 1
    assert agent.metrics()["chutes_agent_kv_conflicts_total"] == 0.0  # our own value is not another writer
    assert "Traceback" not in log


def test_unhealthy_gpu_turns_the_gpu_check_warning(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path
) -> None:
    sim = tmp_path / "node.yaml"
    sim.write_text("gpus: [{model: h100_sxm, count: 8}]\n")
    agent = start_agent(dc, agents, tmp_path, "--simulate-file", str(sim))
    poll_until(lambda: all_passing(dc), "both checks passing")

    sim.write_text("gpus:\n  - {model: h100_sxm, count: 7}\n  - {model: h100_sxm, ecc_errors: 3}\n")
    os.utime(sim, ns=(time.time_ns(), time.time_ns() + 10**9))
    poll_until(lambda: statuses(dc) == {"alive": "passing", "gpus": "warning"}, "GPU check warning")
    output = checks(dc)[f"{SERVICE_ID}:gpus"]["Output"]
    inv = poll_until(lambda: (i := kv_inventory(dc)) and not i.gpus[7].healthy and i, "the unhealthy GPU in KV")
    assert inv.gpus[7].uuid in output and "3 volatile uncorrected ECC error" in output
    assert agent.metrics()[f'chutes_gpu_healthy{{model="h100_sxm",uuid="{inv.gpus[7].uuid}"}}'] == 0.0

    sim.write_text("gpus: [{model: h100_sxm, count: 8}]\n")
    os.utime(sim, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    poll_until(lambda: all_passing(dc), "passing again once the GPU is fixed")


@pytest.mark.slow
def test_two_agents_with_one_node_id_are_detected_and_do_not_fight(
    dc: DevclusterHandle, agents: list[AgentProcess], tmp_path: Path
) -> None:
    first = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8", name="first")
    poll_until(lambda: kv_inventory(dc), "the first agent's inventory")
    second = start_agent(dc, agents, tmp_path, "--simulate", "h100_sxm:8", name="second")
    message = "another agent publishes the same node"
    try:
        poll_until(lambda: message in first.log() and message in second.log(), "both agents to report the duplicate")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- first:\n{first.log()}\n--- second:\n{second.log()}") from None
    for agent in (first, second):
        assert agent.metrics()["chutes_agent_kv_conflicts_total"] >= 1

    def settled() -> tuple[float, float] | None:
        flags = (first.metrics()["chutes_agent_duplicate_node_id"], second.metrics()["chutes_agent_duplicate_node_id"])
        return flags if sorted(flags) == [0.0, 1.0] else None

    flags = poll_until(settled, "one agent to step back", timeout=20)
    writer = first if flags[0] == 0.0 else second
    counts = (first.metrics()["chutes_agent_kv_conflicts_total"], second.metrics()["chutes_agent_kv_conflicts_total"])
    writes = writer.metrics()["chutes_agent_kv_writes_total"]
    time.sleep(4)  # several KV refresh periods: the writer keeps writing, the other keeps out of its way
    assert (first.metrics()["chutes_agent_kv_conflicts_total"],
            second.metrics()["chutes_agent_kv_conflicts_total"]) == counts  # fmt: skip
    assert writer.metrics()["chutes_agent_kv_writes_total"] > writes
    _, item = dc.consul().kv.get(f"chutes/nodes/{NODE}")
    assert json.loads(item["Value"])["node_id"] == NODE


@pytest.mark.slow
def test_acl_tokens_from_the_environment_and_a_refused_token(agents: list[AgentProcess], tmp_path: Path) -> None:
    with devcluster(nodes=[f"{NODE}=h100_sxm:8"], consul_token="c-secret", nomad_token="n-secret") as dc:
        base = ["--node-id", NODE, *FAST, "--simulate", "h100_sxm:8"]
        good = AgentProcess(
            tmp_path, "good", base,
            env={"CONSUL_HTTP_ADDR": dc.consul_addr, "CONSUL_HTTP_TOKEN": "c-secret",
                 "NOMAD_ADDR": dc.nomad_addr, "NOMAD_TOKEN": "n-secret"},
        )  # fmt: skip
        agents.append(good)
        c = dc.consul(token="c-secret")

        def passing() -> bool:
            _, items = c.health.checks("chutes-agent")
            return {i["Status"] for i in items if i["ServiceID"] == SERVICE_ID} == {"passing"}

        poll_until(passing, "passing with tokens from the environment")
        n = dc.nomad(token="n-secret")
        node_id = next(x["ID"] for x in n.nodes.get_nodes() if x["Name"] == NODE)
        poll_until(lambda: n.node.get_node(node_id)["Meta"].get("chutes_gpu_count"), "node meta with the Nomad token")

        bad = AgentProcess(
            tmp_path, "bad", ["--node-id", "other", *FAST, "--simulate", "l4"],
            env={"CONSUL_HTTP_ADDR": dc.consul_addr, "CONSUL_HTTP_TOKEN": "wrong"},
        )  # fmt: skip
        agents.append(bad)
        poll_until(lambda: "Consul answers with errors" in bad.log(), "the refusal logged")
        time.sleep(2)  # several refused heartbeats
        assert bad.proc.poll() is None
        assert bad.log().count("Consul answers with errors") == 1
        assert "ACL not found" in bad.log()  # Consul's answer (403) to a token it does not know


def test_node_id_defaults_to_the_nomad_node_name(agents: list[AgentProcess], tmp_path: Path) -> None:
    with devcluster(nodes=[], extra_args=["--local-node-name", "local-gpu"]) as dc:
        agent = AgentProcess(
            tmp_path, "local", [*FAST, "--simulate", "l40s:2", "--metrics-port", "0"],
            env={"CONSUL_HTTP_ADDR": dc.consul_addr, "NOMAD_ADDR": dc.nomad_addr},
        )  # fmt: skip
        agents.append(agent)
        assert agent.ports["node_id"] == "local-gpu"
        n = dc.nomad()
        (local,) = [x for x in n.nodes.get_nodes() if x["Name"] == "local-gpu"]
        meta = poll_until(lambda: (m := n.node.get_node(local["ID"])["Meta"]).get(
            "chutes_gpu_model") and m, "meta on the local node")  # fmt: skip
        assert meta["chutes_gpu_model"] == "l40s" and meta["chutes_gpu_count"] == "2"
        _, item = poll_until(lambda: (r := dc.consul().kv.get("chutes/nodes/local-gpu"))[1] and r, "KV")
        assert NodeInventory.model_validate_json(item["Value"]).nomad_node_id == local["ID"]
