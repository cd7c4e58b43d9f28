"""TLS to Nomad and Consul: the standard variables, the shared client factory, mutual TLS to the devcluster.

The devcluster serves HTTPS with a certificate from a CA made here and requires client certificates signed by
it (Nomad's ``verify_https_client``, Consul's ``verify_incoming``). Every client library the platform uses
(python-nomad, py-consul sync and asyncio, httpx, the scheduler's NomadClient) connects with the right
settings; a wrong CA, a missing or foreign client certificate and a wrong server name fail with a message that
names the address and the variable to set, and the daemons refuse to start with that message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chutes.core.cluster_tls import (
    ClusterTLS,
    ClusterTLSError,
    consul_address,
    explain,
    preflight,
    python_nomad,
)
from chutes.core.consul_client import consul_aio, consul_sync
from chutes.scheduler.nomad_api import NomadClient, NomadUnavailable
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until
from tests.support.tls import PKI, make_pki

BIN = Path(sys.executable).parent


@dataclass
class World:
    dc: DevclusterHandle
    pki: PKI
    other: PKI  # an unrelated CA with its own server and client certificates

    def tls(self, service: str = "nomad", **changes: str | bool | None) -> ClusterTLS:
        values: dict[str, str | bool | None] = {
            "ca_cert": str(self.pki.ca_cert),
            "client_cert": str(self.pki.client_cert),
            "client_key": str(self.pki.client_key),
        }
        values.update(changes)
        return ClusterTLS(service, **values)  # type: ignore[arg-type]

    def env(self, **changes: str | None) -> dict[str, str]:
        """A process environment for mutual TLS to this devcluster, with some variables changed or removed."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NOMAD_", "CONSUL_", "CHUTES_"))}
        base.update(
            {
                "NOMAD_ADDR": self.dc.nomad_addr,
                "CONSUL_HTTP_ADDR": self.dc.consul_addr,
                "NOMAD_CACERT": str(self.pki.ca_cert),
                "NOMAD_CLIENT_CERT": str(self.pki.client_cert),
                "NOMAD_CLIENT_KEY": str(self.pki.client_key),
                "CONSUL_CACERT": str(self.pki.ca_cert),
                "CONSUL_CLIENT_CERT": str(self.pki.client_cert),
                "CONSUL_CLIENT_KEY": str(self.pki.client_key),
            }
        )
        for key, value in changes.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        return base


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("mtls")
    pki, other = make_pki(tmp / "pki"), make_pki(tmp / "other")
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca_cert)]
    with devcluster(["gpu-a=l4:1"], local_node=False, extra_args=args) as dc:
        yield World(dc, pki, other)


# -- reading the variables ------------------------------------------------------------------------------


def test_the_standard_variables_of_each_service() -> None:
    env = {
        "NOMAD_CACERT": "/n/ca.pem",
        "NOMAD_CLIENT_CERT": "/n/c.pem",
        "NOMAD_CLIENT_KEY": "/n/k.pem",
        "NOMAD_TLS_SERVER_NAME": "server.global.nomad",
        "NOMAD_SKIP_VERIFY": "true",
        "CONSUL_CACERT": "/c/ca.pem",
        "CONSUL_TLS_SERVER_NAME": "consul.internal",
        "CONSUL_HTTP_SSL_VERIFY": "false",
    }
    nomad = ClusterTLS.from_env("nomad", env)
    assert (nomad.ca_cert, nomad.client_pair, nomad.server_name, nomad.verify) == (
        "/n/ca.pem", ("/n/c.pem", "/n/k.pem"), "server.global.nomad", False,
    )  # fmt: skip
    consul = ClusterTLS.from_env("consul", env)
    assert (consul.ca_cert, consul.client_pair, consul.server_name, consul.verify) == (
        "/c/ca.pem", None, "consul.internal", False,
    )  # fmt: skip
    assert ClusterTLS.from_env("nomad", {}).verify and ClusterTLS.from_env("consul", {}).verify
    assert ClusterTLS.from_env("consul", {"CONSUL_HTTP_SSL_VERIFY": "true"}).verify
    assert consul_address("consul.internal:8501", {"CONSUL_HTTP_SSL": "true"}) == "https://consul.internal:8501"
    assert consul_address("consul.internal:8500", {}) == "http://consul.internal:8500"
    assert consul_address(None, {"CONSUL_HTTP_ADDR": "https://c:8501/"}) == "https://c:8501"


def test_half_a_client_certificate_or_a_bad_flag_is_refused_by_name() -> None:
    with pytest.raises(ClusterTLSError, match="NOMAD_CLIENT_CERT is set but NOMAD_CLIENT_KEY is not"):
        ClusterTLS.from_env("nomad", {"NOMAD_CLIENT_CERT": "/c.pem"})
    with pytest.raises(ClusterTLSError, match="CONSUL_CLIENT_KEY is set but CONSUL_CLIENT_CERT is not"):
        ClusterTLS.from_env("consul", {"CONSUL_CLIENT_KEY": "/k.pem"})
    with pytest.raises(ClusterTLSError, match="NOMAD_SKIP_VERIFY='maybe' is not a boolean"):
        ClusterTLS.from_env("nomad", {"NOMAD_SKIP_VERIFY": "maybe"})


def test_unreadable_files_name_their_variable(tmp_path: Path) -> None:
    with pytest.raises(ClusterTLSError, match=r"NOMAD_CACERT=/nope/ca.pem: cannot read the CA certificate"):
        ClusterTLS("nomad", ca_cert="/nope/ca.pem").ssl_context()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ClusterTLSError, match=r"CONSUL_CLIENT_CERT=.*junk.pem / CONSUL_CLIENT_KEY=.*cannot load"):
        ClusterTLS("consul", client_cert=str(junk), client_key=str(junk)).ssl_context()


# -- every client library over mutual TLS ---------------------------------------------------------------


def test_python_nomad_and_the_scheduler_client_over_mutual_tls(world: World) -> None:
    n = python_nomad(world.dc.nomad_addr, tls=world.tls(), timeout=10)
    assert [node["Name"] for node in n.nodes.get_nodes()] == ["gpu-a"]
    named = python_nomad(world.dc.nomad_addr, tls=world.tls(server_name="localhost"), timeout=10)
    assert len(named.nodes.get_nodes()) == 1
    with world.tls().httpx_client(timeout=10) as http:
        assert http.get(f"{world.dc.nomad_addr}/v1/nodes").status_code == 200


async def test_scheduler_nomad_client_over_mutual_tls(world: World) -> None:
    async with NomadClient(world.dc.nomad_addr, tls=world.tls(), timeout_s=10) as client:
        assert [node["Name"] for node in await client.list_nodes()] == ["gpu-a"]


def test_py_consul_sync_over_mutual_tls(world: World) -> None:
    c = consul_sync(world.dc.consul_addr, tls=world.tls("consul"))
    assert c.kv.put("tls/probe", "yes")
    assert c.kv.get("tls/probe")[1]["Value"] == b"yes"


async def test_py_consul_asyncio_over_mutual_tls(world: World) -> None:
    c = consul_aio(world.dc.consul_addr, tls=world.tls("consul", server_name="localhost"))
    try:
        assert await c.kv.put("tls/aio", "yes")
        _, item = await c.kv.get("tls/aio")
        assert item["Value"] == b"yes"
        await preflight("consul", world.dc.consul_addr, tls=world.tls("consul"))  # passes: nothing to say
    finally:
        await c.close()


# -- failures name the address and the variable -----------------------------------------------------------


async def test_wrong_ca_names_the_address_and_nomad_cacert(world: World) -> None:
    async with NomadClient(world.dc.nomad_addr, tls=world.tls(ca_cert=str(world.other.ca_cert)), timeout_s=5) as c:
        with pytest.raises(NomadUnavailable) as info:
            await c.list_nodes()
    text = f"{info.value} {info.value.hint}"
    assert world.dc.nomad_addr in text and "is not trusted" in text and "set NOMAD_CACERT" in text


async def test_missing_client_certificate_names_the_variables(world: World) -> None:
    tls = world.tls(client_cert=None, client_key=None)
    async with NomadClient(world.dc.nomad_addr, tls=tls, timeout_s=5) as c:
        with pytest.raises(NomadUnavailable) as info:
            await c.list_nodes()
    text = f"{info.value} {info.value.hint}"
    assert world.dc.nomad_addr in text and "requires a client certificate" in text
    assert "NOMAD_CLIENT_CERT" in text and "NOMAD_CLIENT_KEY" in text
    with pytest.raises(ClusterTLSError) as consul_info:
        await preflight("consul", world.dc.consul_addr, tls=world.tls("consul", client_cert=None, client_key=None))
    assert world.dc.consul_addr in str(consul_info.value) and "CONSUL_CLIENT_CERT" in (consul_info.value.hint or "")


async def test_foreign_client_certificate_and_wrong_server_name(world: World) -> None:
    foreign = world.tls("consul", client_cert=str(world.other.client_cert), client_key=str(world.other.client_key))
    with pytest.raises(ClusterTLSError, match=r"refused the client certificate in CONSUL_CLIENT_CERT=.*other"):
        await preflight("consul", world.dc.consul_addr, tls=foreign)
    wrong_name = world.tls(server_name="nomad.example")
    n = python_nomad(world.dc.nomad_addr, tls=wrong_name, timeout=5)
    with pytest.raises(Exception) as info:
        n.nodes.get_nodes()
    explained = explain(info.value, wrong_name, world.dc.nomad_addr)
    assert explained is not None and "does not name that host" in str(explained)
    assert "NOMAD_TLS_SERVER_NAME" in (explained.hint or "")


def test_plain_http_addresses_are_not_explained_as_tls(world: World) -> None:
    assert explain(ConnectionResetError("reset"), world.tls(), "http://127.0.0.1:1") is None


# -- the daemons stop at start-up with the message ----------------------------------------------------------


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_scheduler_refuses_to_start_with_a_wrong_ca(world: World, tmp_path: Path) -> None:
    env = world.env(NOMAD_CACERT=str(world.other.ca_cert))
    done = _run([str(BIN / "chutes-scheduler"), "serve", "--port", "0", "--data-dir", str(tmp_path)], env)
    assert done.returncode == 2, done.stderr
    assert f"Nomad at {world.dc.nomad_addr}" in done.stderr and "set NOMAD_CACERT" in done.stderr


def test_gateway_refuses_to_start_without_a_client_certificate(world: World) -> None:
    env = world.env(CONSUL_CLIENT_CERT=None, CONSUL_CLIENT_KEY=None, CHUTES_GATEWAY_KEY="cnk_x")
    done = _run([str(BIN / "chutes-gateway"), "--port", "0", "--scheduler-url", "http://127.0.0.1:9"], env)
    assert done.returncode == 2, done.stderr
    assert f"Consul at {world.dc.consul_addr}" in done.stderr and "CONSUL_CLIENT_CERT" in done.stderr


def test_agent_refuses_to_start_with_a_wrong_consul_ca(world: World) -> None:
    env = world.env(CONSUL_CACERT=str(world.other.ca_cert))
    done = _run([str(BIN / "chutes-agent"), "run", "--node-id", "gpu-a", "--simulate", "l4:1"], env)
    assert done.returncode == 2, done.stderr
    assert f"Consul at {world.dc.consul_addr}" in done.stderr and "set CONSUL_CACERT" in done.stderr


def test_gateway_refuses_to_start_when_nomad_tls_fails(world: World) -> None:
    """With --nomad-addr (the allocation check) the gateway checks TLS to Nomad at start-up too."""
    env = world.env(NOMAD_CACERT=str(world.other.ca_cert), CHUTES_GATEWAY_KEY="cnk_x")
    argv = [str(BIN / "chutes-gateway"), "--port", "0", "--scheduler-url", "http://127.0.0.1:9"]
    done = _run([*argv, "--nomad-addr", world.dc.nomad_addr], env)
    assert done.returncode == 2, done.stderr
    assert f"Nomad at {world.dc.nomad_addr}" in done.stderr and "set NOMAD_CACERT" in done.stderr


async def test_the_gateways_allocation_check_reads_nomad_over_mutual_tls(world: World) -> None:
    """A running allocation's own Consul registration is kept once Nomad (over mutual TLS) confirms it; with a
    CA that does not trust the server Nomad cannot be asked, and the registration waits instead."""
    from chutes.gateway.allocations import NomadAllocations
    from tests.devcluster.jobspecs import gpu_service_job

    n = python_nomad(world.dc.nomad_addr, tls=world.tls(), timeout=10)
    c = consul_sync(world.dc.consul_addr, tls=world.tls("consul"))
    n.jobs.register_job({"Job": gpu_service_job("chute-tls", gpus=1, min_vram="20 GiB")})
    try:
        entries = poll_until(lambda: c.health.service("chute-tls", passing=True)[1], "the instance passing", 60, 0.2)
        found = [(e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"]) for e in entries]
        checked = NomadAllocations(world.dc.nomad_addr, tls=world.tls(), timeout=5)
        untrusted = NomadAllocations(world.dc.nomad_addr, tls=world.tls(ca_cert=str(world.other.ca_cert)), timeout=5)
        try:
            assert await checked("chute-tls", found) == (found, False)
            assert await untrusted("chute-tls", found) == ([], True)
        finally:
            await checked.close()
            await untrusted.close()
    finally:
        n.job.deregister_job("chute-tls", purge=True)


def test_tls_and_acls_together(tmp_path: Path) -> None:
    """The certificate admits the connection, the token decides what the request may do."""
    pki = make_pki(tmp_path / "pki")
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca_cert)]
    tls = ClusterTLS("nomad", str(pki.ca_cert), str(pki.client_cert), str(pki.client_key))
    with devcluster(["gpu-a=l4:1"], local_node=False, extra_args=args, nomad_token="n-mgmt") as dc:
        with tls.httpx_client(timeout=10) as http:
            assert http.get(f"{dc.nomad_addr}/v1/status/leader").status_code == 200  # open, as in Nomad
            assert http.get(f"{dc.nomad_addr}/v1/nodes").status_code == 403
            assert http.get(f"{dc.nomad_addr}/v1/nodes", headers={"X-Nomad-Token": "n-mgmt"}).status_code == 200
        n = python_nomad(dc.nomad_addr, tls=tls, token="n-mgmt", timeout=10)
        assert [node["Name"] for node in n.nodes.get_nodes()] == ["gpu-a"]
