"""The whole dev stack over mutual TLS: the devcluster serves Nomad's and Consul's APIs on HTTPS with a
certificate from a CA made in this test and refuses clients without a certificate signed by it; the agents,
the scheduler and the gateway reach it through the standard variables (``NOMAD_CACERT``, ``NOMAD_CLIENT_CERT``,
``CONSUL_CACERT``, ...). A secret is stored, a chute deployed and called: inventories, job registration, the
job's Nomad Variable, Consul discovery and health all travel over mutual TLS."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from chutes.client import Client
from chutes.core.cluster_tls import ClusterTLS, explain, python_nomad
from chutes.dev import DevStack
from chutes.dev.tls import StackTLS
from tests.e2e.secret_app import APP, RETRIED
from tests.support.polling import poll_until
from tests.support.tls import make_pki

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_stack_over_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = StackTLS(pki.ca_cert, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key)
    (tmp_path / "app.py").write_text(APP)
    with DevStack(data_dir=tmp_path / "data", use_local_gpus=False, echo=lambda _: None, tls=tls) as dev:
        info = dev.start()
        assert info.nomad_addr.startswith("https://") and info.consul_addr.startswith("https://")

        # The devcluster really requires a client certificate (and says so through the explanation).
        anonymous = ClusterTLS("nomad", ca_cert=str(pki.ca_cert))
        with pytest.raises(Exception) as refused, anonymous.httpx_client(timeout=5) as http:
            http.get(f"{info.nomad_addr}/v1/nodes")
        assert "requires a client certificate" in str(explain(refused.value, anonymous, info.nomad_addr))
        with pytest.raises(httpx.ConnectError):  # nor is it reachable without trusting its CA
            httpx.get(f"{info.consul_addr}/v1/status/leader", timeout=5)

        with Client(info.api_url, info.api_key, gateway_url=info.gateway_url) as client:
            assert {n["node_id"] for n in client.nodes() if n["alive"]} == {"gpu-a", "gpu-b"}
            client.create_secret("HF_TOKEN", "over-mutual-tls", chute="secret-echo")
            chute = client.deploy(f"{tmp_path / 'app.py'}:chute")
            poll_until(
                lambda: any(i.get("healthy") for i in client.instances("secret-echo")),
                "a ready instance",
                timeout=90,
                interval=0.3,
                retry_on=RETRIED,
            )
            answer = client.invoke("secret-echo", "/token", {}).json()
            assert answer["sha256"] == hashlib.sha256(b"over-mutual-tls").hexdigest()

        n = python_nomad(info.nomad_addr, info.nomad_token, tls=tls.client("nomad"), timeout=10)
        variable = n.variable.get_variable(f"nomad/jobs/chute-{chute['chute_id']}")
        assert variable["Items"]["HF_TOKEN"] == "over-mutual-tls"
