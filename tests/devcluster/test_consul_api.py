"""Consul endpoints with py-consul (sync and consul.aio): services, checks, health, catalog, KV, sessions."""

from __future__ import annotations

import asyncio
import threading
import time

import consul
import consul.aio
import httpx
import pytest

from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(60)


def test_ttl_service_register_pass_warn_fail_and_expiry(dc: DevclusterHandle) -> None:
    c = dc.consul()
    assert c.agent.service.register(
        "chutes-agent", service_id="chutes-agent-n1", port=0, tags=["agent"], meta={"node": "n1"},
        check=consul.Check.ttl("2s"),
    )  # fmt: skip
    services = c.agent.services()
    assert services["chutes-agent-n1"]["Service"] == "chutes-agent"
    assert services["chutes-agent-n1"]["Meta"] == {"node": "n1"}
    # A new check starts critical: the instance is not passing until the agent reports.
    assert c.health.service("chutes-agent", passing=True)[1] == []
    [entry] = c.health.service("chutes-agent")[1]
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["serfHealth", "service:chutes-agent-n1"]

    assert c.agent.check.ttl_pass("service:chutes-agent-n1", "all good")
    [entry] = c.health.service("chutes-agent", passing=True)[1]
    assert entry["Checks"][1]["Output"] == "all good"
    c.agent.check.ttl_warn("service:chutes-agent-n1")
    assert c.health.service("chutes-agent", passing=True)[1] == []
    assert c.health.service("chutes-agent")[1][0]["Checks"][1]["Status"] == "warning"
    c.agent.check.ttl_pass("service:chutes-agent-n1")
    # No heartbeat for longer than the TTL: critical with Consul's output.
    poll_until(
        lambda: c.health.service("chutes-agent")[1][0]["Checks"][1]["Status"] == "critical", "TTL expiry", timeout=10
    )
    assert c.health.service("chutes-agent")[1][0]["Checks"][1]["Output"] == "TTL expired"
    assert "chutes-agent" in c.catalog.services()[1]
    assert c.agent.service.deregister("chutes-agent-n1")
    assert c.health.service("chutes-agent")[1] == []
    assert "chutes-agent" not in c.catalog.services()[1]
    assert not c.agent.check.ttl_pass("service:chutes-agent-n1"), "an unknown check is a 404"


def test_http_check_and_deregister_critical_service_after(dc: DevclusterHandle) -> None:
    c = dc.consul()
    # Nothing listens on this port: the HTTP check goes critical and the service is reaped.
    check = consul.Check.http("http://127.0.0.1:9/health", interval="100ms", timeout="200ms", deregister="1s")
    c.agent.service.register("doomed", service_id="doomed-1", address="127.0.0.1", port=9, check=check)
    [entry] = c.catalog.service("doomed")[1]
    assert (entry["ServiceAddress"], entry["ServicePort"], entry["ServiceID"]) == ("127.0.0.1", 9, "doomed-1")
    poll_until(lambda: c.health.service("doomed")[1] == [], "the critical service to be reaped", timeout=8)


def test_http_check_passes_against_a_live_server(dc: DevclusterHandle) -> None:
    c = dc.consul()
    check = consul.Check.http(f"http://127.0.0.1:{dc.consul_port}/v1/status/leader", interval="100ms")
    c.agent.service.register("self-check", service_id="self-check-1", port=dc.consul_port, check=check)
    [entry] = poll_until(lambda: c.health.service("self-check", passing=True)[1], "passing", timeout=5)
    assert "200 OK" in entry["Checks"][1]["Output"]
    c.agent.service.deregister("self-check-1")


def test_health_blocking_query_returns_on_change_and_times_out_without_one(dc: DevclusterHandle) -> None:
    c = dc.consul()
    c.agent.service.register("watched", service_id="watched-1", port=1, check=consul.Check.ttl("60s"))
    index, _ = c.health.service("watched", passing=True)
    started = time.monotonic()
    same_index, _ = c.health.service("watched", passing=True, index=index, wait="300ms")
    assert time.monotonic() - started >= 0.25 and same_index == index

    def pass_later() -> None:
        time.sleep(0.3)
        dc.consul().agent.check.ttl_pass("service:watched-1")

    threading.Thread(target=pass_later).start()
    started = time.monotonic()
    new_index, entries = c.health.service("watched", passing=True, index=index, wait="10s")
    assert 0.2 < time.monotonic() - started < 5
    assert int(new_index) > int(index) and len(entries) == 1
    c.agent.service.deregister("watched-1")


def test_kv_cas_recurse_keys_raw_flags_and_delete(dc: DevclusterHandle) -> None:
    c = dc.consul()
    assert c.kv.put("t/kv/a", "1")
    _, item = c.kv.get("t/kv/a")
    assert item["Value"] == b"1" and item["CreateIndex"] == item["ModifyIndex"]
    # cas=0 creates only; cas=<ModifyIndex> updates only from that version.
    assert not c.kv.put("t/kv/a", "x", cas=0)
    assert not c.kv.put("t/kv/a", "x", cas=item["ModifyIndex"] + 1000)
    assert c.kv.put("t/kv/a", "2", cas=item["ModifyIndex"])
    assert not c.kv.put("t/kv/a", "3", cas=item["ModifyIndex"]), "a stale index must fail"
    assert c.kv.put("t/kv/b/c", b"\x00\xffbinary", flags=42)
    assert c.kv.put("t/kv/b/d", "")
    _, items = c.kv.get("t/kv/", recurse=True)
    assert [i["Key"] for i in items] == ["t/kv/a", "t/kv/b/c", "t/kv/b/d"]
    assert items[1]["Value"] == b"\x00\xffbinary" and items[1]["Flags"] == 42
    assert items[2]["Value"] is None
    _, keys = c.kv.get("t/kv/", keys=True, separator="/")
    assert keys == ["t/kv/a", "t/kv/b/"]
    raw = httpx.get(f"{dc.consul_addr}/v1/kv/t/kv/b/c?raw")
    assert raw.content == b"\x00\xffbinary" and int(raw.headers["X-Consul-Index"]) > 0
    assert c.kv.get("t/kv/missing") == (c.kv.get("t/kv/missing")[0], None)
    too_big = httpx.put(f"{dc.consul_addr}/v1/kv/t/kv/big", content=b"x" * (512 * 1024 + 1))
    assert too_big.status_code == 413
    _, a = c.kv.get("t/kv/a")
    assert not c.kv.delete("t/kv/a", cas=a["ModifyIndex"] - 1)
    assert c.kv.delete("t/kv/a", cas=a["ModifyIndex"])
    assert c.kv.delete("t/kv/", recurse=True)
    assert c.kv.get("t/kv/", recurse=True)[1] is None


def test_kv_blocking_get_wakes_on_write_to_that_key(dc: DevclusterHandle) -> None:
    c = dc.consul()
    c.kv.put("t/block/k", "v1")
    index, _ = c.kv.get("t/block/k")

    def write_later() -> None:
        time.sleep(0.3)
        dc.consul().kv.put("t/block/k", "v2")

    threading.Thread(target=write_later).start()
    started = time.monotonic()
    new_index, item = c.kv.get("t/block/k", index=index, wait="10s")
    assert time.monotonic() - started < 5
    assert item["Value"] == b"v2" and int(new_index) > int(index)


def test_session_lock_acquire_release_and_ttl_expiry(dc: DevclusterHandle) -> None:
    c = dc.consul()
    s1 = c.session.create(name="leader-a", ttl=10, lock_delay=0)
    s2 = c.session.create(name="leader-b", ttl=10, lock_delay=0)
    assert c.kv.put("t/leader", "a", acquire=s1)
    assert not c.kv.put("t/leader", "b", acquire=s2), "only one holder"
    _, item = c.kv.get("t/leader")
    assert item["Session"] == s1 and item["LockIndex"] == 1
    assert not c.kv.put("t/leader", "b", release=s2), "only the holder releases"
    assert c.kv.put("t/leader", "a", release=s1)
    assert c.kv.put("t/leader", "b", acquire=s2)
    assert c.session.destroy(s2)
    _, item = c.kv.get("t/leader")
    assert "Session" not in item, "destroying the session releases its lock"
    assert c.session.renew(s1)["ID"] == s1
    assert c.session.info(s1)[1]["Name"] == "leader-a"

    # A short TTL (the devcluster under test accepts 1s) that is not renewed invalidates the session.
    resp = httpx.put(f"{dc.consul_addr}/v1/session/create", json={"Name": "short", "TTL": "2s", "LockDelay": "0s"})
    short = resp.json()["ID"]
    assert c.kv.put("t/leader", "short", acquire=short)
    poll_until(lambda: "Session" not in c.kv.get("t/leader")[1], "the TTL to release the lock", timeout=10)
    assert c.session.info(short)[1] is None
    bad = httpx.put(f"{dc.consul_addr}/v1/session/create", json={"TTL": "100ms"})
    assert bad.status_code == 400 and "TTL" in bad.json()["detail"]


def test_session_lock_delay_and_delete_behavior(dc: DevclusterHandle) -> None:
    c = dc.consul()
    holder = c.session.create(name="holder", lock_delay=3)
    other = c.session.create(name="other", lock_delay=0)
    assert c.kv.put("t/delay", "x", acquire=holder)
    c.session.destroy(holder)
    assert not c.kv.put("t/delay", "y", acquire=other), "lock-delay holds the key back"
    poll_until(lambda: c.kv.put("t/delay", "y", acquire=other), "lock-delay to pass", timeout=10)
    ephemeral = c.session.create(name="eph", behavior="delete", lock_delay=0)
    assert c.kv.put("t/ephemeral", "here", acquire=ephemeral)
    c.session.destroy(ephemeral)
    assert c.kv.get("t/ephemeral")[1] is None


def test_async_client_kv_and_blocking(dc: DevclusterHandle) -> None:
    async def scenario() -> None:
        c = consul.aio.Consul(host="127.0.0.1", port=dc.consul_port)
        try:
            assert await c.kv.put("t/aio", "1")
            index, item = await c.kv.get("t/aio")
            assert item["Value"] == b"1"

            async def write_later() -> None:
                await asyncio.sleep(0.2)
                await c.kv.put("t/aio", "2")

            writer = asyncio.create_task(write_later())
            _, item = await c.kv.get("t/aio", index=index, wait="10s")
            await writer
            assert item["Value"] == b"2"
            await c.agent.service.register("aio-svc", service_id="aio-1", port=5, check=consul.Check.ttl("30s"))
            await c.agent.check.ttl_pass("service:aio-1")
            _, entries = await c.health.service("aio-svc", passing=True)
            assert [e["Service"]["Port"] for e in entries] == [5]
            await c.agent.service.deregister("aio-1")
        finally:
            await c.close()

    asyncio.run(scenario())


def test_registration_errors_are_4xx_with_a_reason(dc: DevclusterHandle) -> None:
    bad = httpx.put(f"{dc.consul_addr}/v1/agent/service/register", json={"Name": "x", "Chek": {"TTL": "1s"}})
    assert bad.status_code == 400 and "chek" in bad.json()["detail"]
    script = httpx.put(
        f"{dc.consul_addr}/v1/agent/service/register", json={"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}}
    )
    assert script.status_code == 400 and "not supported" in script.json()["detail"]
    missing = httpx.put(f"{dc.consul_addr}/v1/agent/service/deregister/nope")
    assert missing.status_code == 404


def test_edge_answers_as_consul_gives_them(dc: DevclusterHandle) -> None:
    c = dc.consul()
    # A wrong datacenter fails (Consul cannot forward to it); the right one and the agent's endpoints work.
    with pytest.raises(consul.ConsulException) as err:
        c.kv.get("edge/x", dc="dc2")
    assert "No path to datacenter" in str(err.value)
    with pytest.raises(consul.ConsulException):
        c.catalog.services(dc="elsewhere")
    assert c.kv.get("edge/x", dc="dc1")[1] is None
    # Releasing with a session that holds nothing (here: one that does not exist) is 200 false, not an error.
    assert c.kv.put("edge/lock", "v")
    assert c.kv.put("edge/lock", "v", release="00000000-0000-0000-0000-00000000beef") is False
    with pytest.raises(consul.ConsulException) as err:
        c.kv.put("edge/lock", "v", acquire="00000000-0000-0000-0000-00000000beef")
    assert "invalid session" in str(err.value)
    # agent/self carries what Nomad's Consul fingerprint reads.
    me = c.agent.self()
    major, minor, _patch = (int(p) for p in me["Config"]["Version"].split("."))
    assert (major, minor) >= (1, 0)
    assert me["Config"]["Datacenter"] == "dc1" and me["Config"]["Server"] is True
    assert me["DebugConfig"]["ConnectEnabled"] is False
    assert all(isinstance(v, str) for section in me["Stats"].values() for v in section.values())
    assert me["Stats"]["consul"]["server"] == "true" and me["Stats"]["build"]["version"] == me["Config"]["Version"]
    # Nested TaggedAddresses in any casing come back canonical; agent services carry AgentService's keys.
    resp = httpx.put(
        f"{dc.consul_addr}/v1/agent/service/register",
        json={"Name": "edge-svc", "ID": "edge-1", "Port": 9000,
              "tagged_addresses": {"lan": {"address": "10.0.0.5", "port": 9000}, "wan": {"Address": "1.2.3.4"}}},
    )  # fmt: skip
    assert resp.status_code == 200
    services = c.agent.services()
    assert services["edge-1"]["TaggedAddresses"] == {
        "lan": {"Address": "10.0.0.5", "Port": 9000},
        "wan": {"Address": "1.2.3.4", "Port": 0},
    }
    assert set(services["edge-1"]) == {
        "ID", "Service", "Tags", "Meta", "Port", "Address", "TaggedAddresses", "Weights", "EnableTagOverride",
        "Datacenter",
    }  # fmt: skip
    _, [entry] = c.catalog.service("edge-svc")
    assert entry["ServiceTaggedAddresses"]["lan"] == {"Address": "10.0.0.5", "Port": 9000}
    bad = httpx.put(
        f"{dc.consul_addr}/v1/agent/service/register", json={"Name": "edge-bad", "TaggedAddresses": {"lan": "10.0.0.5"}}
    )
    assert bad.status_code == 400 and "TaggedAddresses" in bad.json()["detail"]
    c.agent.service.deregister("edge-1")
