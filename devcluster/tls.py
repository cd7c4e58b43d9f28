"""HTTPS for the devcluster's two servers: a given certificate, and optionally required client certificates.

With ``--tls-cert``/``--tls-key`` both APIs serve HTTPS (as Nomad with ``tls { http = true }`` and Consul's
``https`` port); with ``--tls-client-ca`` as well, every connection must present a client certificate signed by
that CA (Nomad's ``verify_https_client``, Consul's ``verify_incoming``). Checks the devcluster runs against
tasks stay plain HTTP, as Consul's do unless a check sets ``TLSServerName``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from chutes.devcluster.config import ConfigError


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context for ``cert``/``key``; with ``client_ca``, client certificates are required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot load them ({exc})") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-client-ca {client_ca}: cannot load it ({exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
