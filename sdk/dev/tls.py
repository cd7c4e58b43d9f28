"""Mutual TLS between the dev stack's processes and its devcluster (tests, and trying a TLS set-up locally).

The devcluster serves both APIs over HTTPS with ``server_cert`` and requires client certificates signed by
``ca_cert``; the agents, the scheduler and the gateway get the standard variables (``NOMAD_CACERT``,
``NOMAD_CLIENT_CERT``, ... see ``chutes.core.cluster_tls``) pointing at ``client_cert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chutes.core.cluster_tls import ClusterTLS, Service


@dataclass(frozen=True)
class StackTLS:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def devcluster_args(self) -> list[str]:
        return ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key),
                "--tls-client-ca", str(self.ca_cert)]  # fmt: skip

    def client_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for prefix in ("NOMAD", "CONSUL"):
            env[f"{prefix}_CACERT"] = str(self.ca_cert)
            env[f"{prefix}_CLIENT_CERT"] = str(self.client_cert)
            env[f"{prefix}_CLIENT_KEY"] = str(self.client_key)
        return env

    def client(self, service: Service) -> ClusterTLS:
        return ClusterTLS.from_env(service, self.client_env())
