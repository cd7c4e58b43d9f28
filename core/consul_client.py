"""One way to build a py-consul client, for every process that talks to Consul (scheduler, gateway, agent, dev).

Two rules live here and nowhere else:

* **The token.** py-consul reads ``CONSUL_HTTP_TOKEN`` from the environment *over* an explicit ``token=``
  argument (``self.token = os.getenv("CONSUL_HTTP_TOKEN", token)``), so a ``--consul-token`` flag silently
  lost to the environment. Each daemon already resolves its token (flag first, then the environment) before
  it gets here, so the factory sets the resolved token after construction: what the caller passes is what is
  sent, and None means no token.
* **TLS.** The CA, client certificate, server name and verification come from ``CONSUL_CACERT`` & co.
  (:class:`chutes.core.cluster_tls.ClusterTLS`), or from an explicit ``tls``. py-consul's own aiohttp adapter can
  neither send a server name nor take an ``ssl.SSLContext`` (and builds its connector with arguments aiohttp
  deprecated), so the asyncio client here uses an adapter that does both.

A scheme-less address (``host:port``) is http, or https with ``CONSUL_HTTP_SSL=true``, as in Consul's CLI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from chutes.core.cluster_tls import ClusterTLS, consul_address

DEFAULT_PORT = 8500


def split_address(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a Consul address: ``http(s)://host:port`` or a bare ``host:port``."""
    parts = urlsplit(consul_address(address))
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else DEFAULT_PORT)
    return scheme, parts.hostname or "127.0.0.1", port


def consul_sync(address: str, token: str | None = None, *, tls: ClusterTLS | None = None, **kwargs: Any) -> Any:
    """py-consul's sync client for ``address`` that sends exactly ``token``, TLS from the environment (or ``tls``).

    ``kwargs`` go to ``consul.Consul`` (``dc``, ``timeout``, ...).
    """
    import consul

    tls = tls or ClusterTLS.from_env("consul")
    scheme, host, port = split_address(address)
    client = consul.Consul(
        host=host, port=port, scheme=scheme, token=token, verify=tls.requests_verify(), cert=tls.client_pair, **kwargs
    )
    client.token = token  # the resolved token wins over CONSUL_HTTP_TOKEN (see the module docstring)
    tls.mount(client.http.session)
    return client


def consul_aio(
    address: str,
    token: str | None = None,
    *,
    timeout: float | None = None,
    connections_limit: int | None = None,
    tls: ClusterTLS | None = None,
) -> Any:
    """A ``consul.aio.Consul`` for ``address`` that sends exactly ``token``; create it inside a running loop.

    ``timeout`` bounds each request (py-consul's ``connections_timeout``; blocking queries need it above their
    ``wait``); ``connections_limit`` sizes aiohttp's pool (a process holding many blocking queries needs more
    than aiohttp's default 100); TLS comes from the environment, or from ``tls``.
    """
    import consul.aio

    tls = tls or ClusterTLS.from_env("consul")
    scheme, host, port = split_address(address)
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["connections_timeout"] = timeout
    if connections_limit is not None:
        kwargs["connections_limit"] = connections_limit
    client = _tls_consul_class()(
        host=host, port=port, scheme=scheme, token=token, tls_settings=tls, verify=tls.verify, **kwargs
    )
    client.token = token  # the resolved token wins over CONSUL_HTTP_TOKEN (see the module docstring)
    assert isinstance(client, consul.aio.Consul)
    return client


_CONSUL_CLASS: Any = None


def _tls_consul_class() -> Any:
    """``consul.aio.Consul`` with an aiohttp adapter that applies a ClusterTLS (built once, on first use)."""
    global _CONSUL_CLASS
    if _CONSUL_CLASS is not None:
        return _CONSUL_CLASS
    import aiohttp
    import consul.aio
    from consul import base

    class TLSHTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]
        def __init__(self, host: str, port: int, scheme: str, *, tls: ClusterTLS, **kwargs: Any) -> None:
            # Skips consul.aio.HTTPClient.__init__: its connector takes no server name and no SSLContext.
            base.HTTPClient.__init__(self, host, port, scheme, tls.verify, tls.client_pair)
            self.loop = kwargs.get("loop")
            limit = kwargs.get("connections_limit")
            timeout = kwargs.get("connections_timeout")
            self._tls_kwargs = tls.aiohttp_request_kwargs() if scheme == "https" else {}
            connector = aiohttp.TCPConnector(limit=limit) if limit else aiohttp.TCPConnector()
            session_kwargs: dict[str, Any] = {}
            if timeout:
                session_kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
            self._session = aiohttp.ClientSession(connector=connector, **session_kwargs)

        async def _request(
            self,
            callback: Any,
            method: str,
            uri: str,
            headers: Any,
            data: Any = None,
            connections_timeout: Any = None,
            raw: bool = False,
        ) -> Any:
            extra: dict[str, Any] = dict(self._tls_kwargs)
            if connections_timeout:
                extra["timeout"] = aiohttp.ClientTimeout(total=connections_timeout)
            resp = await self._session.request(method, uri, headers=headers, data=data, **extra)
            body = await resp.read() if raw else await resp.text(encoding="utf-8")
            if resp.status == 599:
                raise consul.Timeout
            return callback(base.Response(resp.status, resp.headers, body))

    class TLSConsul(consul.aio.Consul):  # type: ignore[misc]
        def __init__(self, *args: Any, tls_settings: ClusterTLS, **kwargs: Any) -> None:
            self._tls_settings = tls_settings
            super().__init__(*args, **kwargs)

        def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> Any:
            return TLSHTTPClient(
                host,
                port,
                scheme,
                tls=self._tls_settings,
                loop=self.loop,
                connections_limit=self.connections_limit,
                connections_timeout=self.connections_timeout,
            )

    _CONSUL_CLASS = TLSConsul
    return _CONSUL_CLASS
