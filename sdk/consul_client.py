"""One way to build a py-consul asyncio client, for every process that talks to Consul (scheduler, gateway, agent).

py-consul reads ``CONSUL_HTTP_TOKEN`` from the environment *over* an explicit ``token=`` argument
(``self.token = os.getenv("CONSUL_HTTP_TOKEN", token)``), so a ``--consul-token`` flag silently lost to the
environment. Each daemon already resolves its token (flag first, then the environment) before it gets here,
so the factory sets the resolved token after construction: what the caller passes is what is sent, and None
means no token.
"""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORT = 8500


def split_address(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a Consul address: ``http(s)://host:port`` or a bare ``host:port``."""
    parts = urlsplit(address if "://" in address else f"http://{address}")
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else DEFAULT_PORT)
    return scheme, parts.hostname or "127.0.0.1", port


def consul_aio(
    address: str,
    token: str | None = None,
    *,
    timeout: float | None = None,
    connections_limit: int | None = None,
) -> Any:
    """A ``consul.aio.Consul`` for ``address`` that sends exactly ``token``; create it inside a running loop.

    ``timeout`` bounds each request (py-consul's ``connections_timeout``; blocking queries need it above their
    ``wait``); ``connections_limit`` sizes aiohttp's pool (a process holding many blocking queries needs more
    than aiohttp's default 100).
    """
    import consul.aio

    scheme, host, port = split_address(address)
    kwargs: dict[str, Any] = {"host": host, "port": port, "scheme": scheme, "token": token}
    if timeout is not None:
        kwargs["connections_timeout"] = timeout
    if connections_limit is not None:
        kwargs["connections_limit"] = connections_limit
    with warnings.catch_warnings():
        # py-consul builds its aiohttp connector with arguments aiohttp has deprecated (ssl_context/verify_ssl)
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.aio.Consul(**kwargs)
    client.token = token  # the resolved token wins over CONSUL_HTTP_TOKEN (see the module docstring)
    return client
