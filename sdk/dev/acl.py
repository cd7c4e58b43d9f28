"""Cluster tokens for ``chutes dev``: the devcluster runs with ACLs, and each part gets the least it needs.

``chutes dev`` makes a management token for Nomad and one for Consul (kept in the data directory as
``nomad_token`` and ``consul_token``, for the ``nomad`` and ``consul`` CLIs), starts the devcluster with them,
then puts one policy per part (the policies of docs/cluster.md, "Tokens (ACLs)") and a client token per part
through the ACL APIs, as an operator would on a real cluster. Tokens that still work are kept across runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from chutes.core.cluster_tls import ClusterTLS
from chutes.core.invalidation import DEFAULT_KEY

#: Nomad and Consul policies per part (docs/cluster.md §5 explains each line)
POLICIES: dict[str, tuple[str, str]] = {
    "scheduler": (
        """
namespace "default" {
  policy = "write"
  variables {
    path "nomad/jobs/chute-*" { capabilities = ["write", "read", "list", "destroy"] }
    path "nomad/jobs/chutes-build-*" { capabilities = ["write", "read", "list", "destroy"] }
  }
}
node { policy = "read" }
""",
        """
key_prefix "chutes/" { policy = "write" }
session_prefix "" { policy = "write" }
service_prefix "" { policy = "read" }
service_prefix "chute-" { policy = "write" }
node_prefix "" { policy = "read" }
""",
    ),
    "gateway": (
        """
namespace "default" { policy = "read" }
""",
        # The access-change notices (chutes.core.invalidation.DEFAULT_KEY), read with blocking queries: that key only.
        f"""
service_prefix "chute-" {{ policy = "read" }}
node_prefix "" {{ policy = "read" }}
key "{DEFAULT_KEY}" {{ policy = "read" }}
""",
    ),
    "agent": (
        """
node { policy = "write" }
agent { policy = "read" }
""",
        """
service "chutes-agent" { policy = "write" }
key_prefix "chutes/nodes/" { policy = "write" }
node_prefix "" { policy = "read" }
""",
    ),
}


class ACLSetupError(RuntimeError):
    """The devcluster refused to set up a policy or token; the message says which."""


def new_secret() -> str:
    """A token secret in the form Nomad and Consul use (a UUID)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class PartTokens:
    nomad: str
    consul: str


def _check(resp: httpx.Response, what: str) -> Any:
    if resp.status_code >= 300:
        raise ACLSetupError(f"{what}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else None


def _works(client: httpx.Client, url: str, header: str, secret: str | None) -> bool:
    if not secret:
        return False
    try:
        return client.get(url, headers={header: secret}).status_code == 200
    except httpx.HTTPError:
        return False


def provision(
    nomad_addr: str,
    consul_addr: str,
    nomad_management: str,
    consul_management: str,
    stored: dict[str, str],
    timeout: float = 10.0,
    tls: ClusterTLS | None = None,
) -> dict[str, PartTokens]:
    """Put each part's policies and make (or keep) its tokens; ``stored`` holds secrets of earlier runs and
    is updated with the new ones (``<part>_nomad_token``, ``<part>_consul_token``). ``tls``: how to reach a
    devcluster serving HTTPS (the dev stack gives both APIs the same CA and client certificate)."""
    tokens: dict[str, PartTokens] = {}
    nomad_h = {"X-Nomad-Token": nomad_management}
    consul_h = {"X-Consul-Token": consul_management}
    with tls.httpx_client(timeout=timeout) if tls is not None else httpx.Client(timeout=timeout) as client:
        for part, (nomad_rules, consul_rules) in POLICIES.items():
            name = f"chutes-{part}"
            _check(
                client.post(f"{nomad_addr}/v1/acl/policy/{name}", headers=nomad_h,
                            json={"Name": name, "Description": f"chutes dev: {part}", "Rules": nomad_rules}),
                f"Nomad policy {name}",
            )  # fmt: skip
            existing = client.get(f"{consul_addr}/v1/acl/policy/name/{name}", headers=consul_h)
            body = {"Name": name, "Description": f"chutes dev: {part}", "Rules": consul_rules}
            if existing.status_code == 200:
                _check(client.put(f"{consul_addr}/v1/acl/policy/{existing.json()['ID']}", headers=consul_h,
                                  json=body), f"Consul policy {name}")  # fmt: skip
            else:
                _check(client.put(f"{consul_addr}/v1/acl/policy", headers=consul_h, json=body), f"Consul policy {name}")
            nomad_secret = stored.get(f"{part}_nomad_token")
            if not _works(client, f"{nomad_addr}/v1/acl/token/self", "X-Nomad-Token", nomad_secret):
                made = _check(
                    client.post(f"{nomad_addr}/v1/acl/token", headers=nomad_h,
                                json={"Name": name, "Type": "client", "Policies": [name]}),
                    f"Nomad token for the {part}",
                )  # fmt: skip
                nomad_secret = str(made["SecretID"])
            consul_secret = stored.get(f"{part}_consul_token")
            if not _works(client, f"{consul_addr}/v1/acl/token/self", "X-Consul-Token", consul_secret):
                made = _check(
                    client.put(f"{consul_addr}/v1/acl/token", headers=consul_h,
                               json={"Description": name, "Policies": [{"Name": name}]}),
                    f"Consul token for the {part}",
                )  # fmt: skip
                consul_secret = str(made["SecretID"])
            assert nomad_secret is not None and consul_secret is not None
            stored[f"{part}_nomad_token"] = nomad_secret
            stored[f"{part}_consul_token"] = consul_secret
            tokens[part] = PartTokens(nomad_secret, consul_secret)
    return tokens
