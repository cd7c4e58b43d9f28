"""TLS to Nomad and Consul for every process: one reading of the standard variables, one way to apply them.

Operators run Nomad with ``verify_https_client`` and Consul with ``verify_incoming``; the scheduler, the
gateway, the agent and the dev stack reach them through clients configured here (python-nomad's by
:func:`python_nomad`; py-consul's by :mod:`chutes.core.consul_client`, which adds the token rule) from the same
variables that Nomad's and Consul's own CLIs read:

=========================  ===========================  ==============================================
Nomad                      Consul                       meaning
=========================  ===========================  ==============================================
``NOMAD_CACERT``           ``CONSUL_CACERT``            PEM file of the CA that signed the server's cert
``NOMAD_CLIENT_CERT``      ``CONSUL_CLIENT_CERT``       PEM client certificate (mutual TLS)
``NOMAD_CLIENT_KEY``       ``CONSUL_CLIENT_KEY``        its private key
``NOMAD_TLS_SERVER_NAME``  ``CONSUL_TLS_SERVER_NAME``    name to send (SNI) and to verify in the server cert
``NOMAD_SKIP_VERIFY``      ``CONSUL_HTTP_SSL_VERIFY``    ``true`` / ``false``: do not verify (tests only)
=========================  ===========================  ==============================================

They matter for ``https://`` addresses only (``CONSUL_HTTP_SSL=true`` turns a scheme-less
``CONSUL_HTTP_ADDR`` into https, as Consul's CLI does). A handshake that fails is explained by
:func:`explain`: the message names the address and the variable to set.

The module imports only the standard library at load time (the agent's start-up cost is measured); client
libraries are imported inside the factories.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chutes.core.errors import HintedError

if TYPE_CHECKING:
    import httpx
    import requests

Service = Literal["nomad", "consul"]

_VARS: dict[Service, dict[str, str]] = {
    "nomad": {
        "addr": "NOMAD_ADDR",
        "ca": "NOMAD_CACERT",
        "cert": "NOMAD_CLIENT_CERT",
        "key": "NOMAD_CLIENT_KEY",
        "name": "NOMAD_TLS_SERVER_NAME",
        "verify": "NOMAD_SKIP_VERIFY",
    },
    "consul": {
        "addr": "CONSUL_HTTP_ADDR",
        "ca": "CONSUL_CACERT",
        "cert": "CONSUL_CLIENT_CERT",
        "key": "CONSUL_CLIENT_KEY",
        "name": "CONSUL_TLS_SERVER_NAME",
        "verify": "CONSUL_HTTP_SSL_VERIFY",
    },
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ClusterTLSError(HintedError):
    """TLS to Nomad or Consul cannot work as configured; the message names the address and the variable.

    ``kind``: ``config`` (a variable or file is wrong), ``ca``, ``name``, ``client``, ``plaintext``,
    ``handshake``, or ``closed`` (the server hung up after the handshake: most likely it refused the client
    certificate, but a restarting server looks the same).
    """

    def __init__(self, message: str, hint: str | None = None, kind: str = "config") -> None:
        super().__init__(message, hint)
        self.kind = kind


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ClusterTLSError(f"{name}={raw!r} is not a boolean", "use true or false")


@dataclass(frozen=True, slots=True)
class ClusterTLS:
    """How to reach one service (Nomad or Consul) over TLS; ``from_env`` reads the standard variables."""

    service: Service
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None
    verify: bool = True

    @classmethod
    def from_env(cls, service: Service, env: Mapping[str, str] | None = None) -> ClusterTLS:
        env = os.environ if env is None else env
        names = _VARS[service]

        def get(what: str) -> str | None:
            return env.get(names[what], "").strip() or None

        flag = _flag(env, names["verify"])
        # NOMAD_SKIP_VERIFY=true skips; CONSUL_HTTP_SSL_VERIFY=false skips.
        verify = not flag if service == "nomad" else flag is not False
        tls = cls(service, get("ca"), get("cert"), get("key"), get("name"), bool(verify))
        if bool(tls.client_cert) != bool(tls.client_key):
            given, missing = ("cert", "key") if tls.client_cert else ("key", "cert")
            raise ClusterTLSError(
                f"{names[given]} is set but {names[missing]} is not",
                f"a client certificate needs both {names['cert']} and {names['key']}",
            )
        return tls

    def var(self, what: Literal["addr", "ca", "cert", "key", "name", "verify"]) -> str:
        """The name of the variable that sets ``what`` for this service (``var("ca")`` → ``NOMAD_CACERT``)."""
        return _VARS[self.service][what]

    @property
    def label(self) -> str:
        return "Nomad" if self.service == "nomad" else "Consul"

    @property
    def client_pair(self) -> tuple[str, str] | None:
        if self.client_cert and self.client_key:
            return self.client_cert, self.client_key
        return None

    # -- the standard library -----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: the CA (or the system's), the client certificate, hostname checks unless skipped."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ClusterTLSError(
                f"{self.var('ca')}={self.ca_cert}: cannot read the CA certificate ({_reason(exc)})",
                f"point {self.var('ca')} at the PEM file of the CA that signed {self.label}'s certificate",
            ) from None
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        pair = self.client_pair
        if pair is not None:
            try:
                ctx.load_cert_chain(pair[0], pair[1])
            except (OSError, ssl.SSLError) as exc:
                raise ClusterTLSError(
                    f"{self.var('cert')}={pair[0]} / {self.var('key')}={pair[1]}: cannot load the client "
                    f"certificate ({_reason(exc)})",
                    "both must be PEM files, the key unencrypted and matching the certificate",
                ) from None
        return ctx

    # -- requests (python-nomad, py-consul's sync client) -------------------------------------------

    def requests_verify(self) -> bool | str:
        """requests' ``verify``: False, the CA file, or True (the system's trust store)."""
        if not self.verify:
            return False
        return self.ca_cert or True

    def mount(self, session: requests.Session) -> requests.Session:
        """Make ``session`` send and check ``server_name`` (SNI and hostname) on https; returns it."""
        if self.server_name:
            session.mount("https://", _server_name_adapter(self.server_name))
        return session

    def requests_session(self) -> requests.Session:
        import requests

        return self.mount(requests.Session())

    # -- httpx and aiohttp --------------------------------------------------------------------------

    def httpx_client(self, **kwargs: Any) -> httpx.Client:
        """A sync httpx client for this service's https addresses (also fine for http)."""
        import httpx

        hooks: dict[str, list[Any]] = {"request": [self._httpx_sni]} if self.server_name else {}
        return httpx.Client(verify=self.ssl_context(), event_hooks=hooks, **kwargs)

    def _httpx_sni(self, request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = self.server_name

    def aiohttp_request_kwargs(self) -> dict[str, Any]:
        """Per-request keyword arguments for aiohttp (``ssl`` context and ``server_hostname``)."""
        kwargs: dict[str, Any] = {"ssl": self.ssl_context()}
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return kwargs


def _server_name_adapter(name: str) -> Any:
    from requests.adapters import HTTPAdapter

    class ServerNameAdapter(HTTPAdapter):
        """urllib3 pools that send ``name`` as SNI and match the certificate against it."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["server_hostname"] = name
            super().init_poolmanager(*args, **kwargs)

    return ServerNameAdapter()


# -- client factories -------------------------------------------------------------------------------------


def consul_address(value: str | None, env: Mapping[str, str] | None = None) -> str:
    """``CONSUL_HTTP_ADDR`` as a URL: ``host:port`` gets http, or https with ``CONSUL_HTTP_SSL=true``."""
    env = os.environ if env is None else env
    text = (value or env.get("CONSUL_HTTP_ADDR", "") or "127.0.0.1:8500").strip().rstrip("/")
    if "://" in text:
        return text
    return f"{'https' if _flag(env, 'CONSUL_HTTP_SSL') else 'http'}://{text}"


def python_nomad(
    address: str,
    token: str | None = None,
    *,
    tls: ClusterTLS | None = None,
    session: requests.Session | None = None,
    **kwargs: Any,
) -> Any:
    """python-nomad's client for ``address`` with TLS from the environment (or ``tls``)."""
    import nomad

    tls = tls or ClusterTLS.from_env("nomad")
    if session is None:
        session = tls.requests_session()
    else:
        tls.mount(session)
    return nomad.Nomad(
        address=address.rstrip("/"),
        token=token,
        verify=tls.requests_verify(),
        cert=tls.client_pair or (),
        session=session,
        **kwargs,
    )


# -- explaining failures ----------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for nxt in (item.__cause__, item.__context__, *(a for a in item.args if isinstance(a, BaseException))):
            if nxt is not None:
                todo.append(nxt)
        for attr in ("reason", "os_error", "_os_error", "certificate_error", "_certificate_error"):
            try:  # urllib3's and aiohttp's wrappers keep the cause in an attribute
                inner = getattr(item, attr, None)
            except Exception:  # a property that raises: no cause there
                inner = None
            if isinstance(inner, BaseException):
                todo.append(inner)


def _attr(exc: BaseException, name: str) -> str:
    try:  # some wrappers (aiohttp's certificate error) expose properties that raise
        value = getattr(exc, name, None)
    except Exception:
        return ""
    return str(value) if value else ""


def _reason(exc: BaseException) -> str:
    reason = _attr(exc, "reason") if isinstance(exc, ssl.SSLError) else ""
    if reason:
        verify = _attr(exc, "verify_message")
        return f"{reason}: {verify}" if verify else reason
    return _attr(exc, "strerror") or str(exc) or type(exc).__name__


def explain(exc: BaseException, tls: ClusterTLS, address: str) -> ClusterTLSError | None:
    """A ClusterTLSError naming the address and the variable to set, when ``exc`` is a TLS failure; else None."""
    if not address.startswith("https://"):
        return None  # TLS settings apply to https:// addresses only
    texts = []
    for item in _chain(exc):
        texts.append(f"{type(item).__name__}: {item}")
        if isinstance(item, ssl.SSLError):
            texts.append(_attr(item, "reason"))
            texts.append(_attr(item, "verify_message"))
    text = " | ".join(texts).lower()
    who = f"{tls.label} at {address}"
    if "hostname mismatch" in text or "ip address mismatch" in text or "doesn't match" in text:
        return ClusterTLSError(
            f"the TLS certificate of {who} does not name that host ({_first_ssl_reason(exc)})",
            f"set {tls.var('name')} to a name in its certificate (or connect by that name)",
            "name",
        )
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return ClusterTLSError(
            f"the TLS certificate of {who} is not trusted ({_first_ssl_reason(exc)})",
            f"set {tls.var('ca')} to the CA certificate that signed it"
            + ("" if tls.ca_cert is None else f" ({tls.var('ca')}={tls.ca_cert} did not)"),
            "ca",
        )
    if any(m in text for m in ("certificate required", "certificate_required", "handshake failure",
                                "handshake_failure", "bad certificate", "bad_certificate", "unknown ca",
                                "unknown_ca", "certificate unknown", "certificate_unknown")):  # fmt: skip
        return _refused_client(tls, who, _first_ssl_reason(exc), "client")
    if "wrong version number" in text or "wrong_version_number" in text or "record layer failure" in text:
        return ClusterTLSError(
            f"{who} does not speak TLS ({_first_ssl_reason(exc)})",
            f"use http:// in {tls.var('addr')}, or enable TLS on {tls.label}",
            "plaintext",
        )
    if any(isinstance(item, ssl.SSLError) for item in _chain(exc)):
        return ClusterTLSError(
            f"the TLS handshake with {who} failed ({_first_ssl_reason(exc)})",
            f"check {tls.var('ca')}, {tls.var('cert')} and {tls.var('key')}",
            "handshake",
        )
    if any(marker in text for marker in _CLOSED):
        # With TLS 1.3 the client's side of the handshake ends before the server checks the client's
        # certificate; a server that refuses it sends an alert (Go) or just closes (Python's asyncio), which
        # the client sees on its first read as a closed connection.
        return _refused_client(tls, who, _first_ssl_reason(exc), "closed")
    return None


_CLOSED = ("remote end closed connection", "remotedisconnected", "server disconnected", "connection reset",
           "eof occurred", "unexpected eof", "connection aborted")  # fmt: skip


def _refused_client(tls: ClusterTLS, who: str, reason: str, kind: str) -> ClusterTLSError:
    if tls.client_pair is None:
        return ClusterTLSError(
            f"{who} requires a client certificate and none was given ({reason})",
            f"set {tls.var('cert')} and {tls.var('key')} to a certificate and key signed by the CA {tls.label} "
            "trusts (verify_https_client / verify_incoming)",
            kind,
        )
    return ClusterTLSError(
        f"{who} refused the client certificate in {tls.var('cert')}={tls.client_cert} ({reason})",
        f"set {tls.var('cert')} and {tls.var('key')} to a certificate signed by the CA {tls.label} trusts",
        kind,
    )


def _first_ssl_reason(exc: BaseException) -> str:
    """The most telling reason: an SSL error's, else that of the innermost exception (not its wrappers)."""
    items = list(_chain(exc))
    for item in items:
        if isinstance(item, ssl.SSLError) and _reason(item):
            return _reason(item)
    return _reason(items[-1])


# -- a start-up check ---------------------------------------------------------------------------------------


async def preflight(service: Service, address: str, *, timeout_s: float = 5.0, tls: ClusterTLS | None = None) -> None:
    """Raise ClusterTLSError when TLS to ``address`` cannot work; any other outcome (even down) passes.

    Processes call it once at start-up so that a wrong CA or a missing client certificate stops them with a
    clear message instead of an endless retry loop. Plain-HTTP addresses are not checked.
    """
    if not address.startswith("https://"):
        return
    import aiohttp

    tls = tls or ClusterTLS.from_env(service)
    kwargs = tls.aiohttp_request_kwargs()
    for attempt in range(3):
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.get(f"{address.rstrip('/')}/v1/status/leader", **kwargs) as resp,
            ):
                await resp.read()
            return
        except Exception as exc:
            explained = explain(exc, tls, address)
            if explained is None:
                return
            if explained.kind == "closed" and attempt < 2:
                await asyncio.sleep(0.3)  # a restarting server also hangs up: only a repeated close counts
                continue
            raise explained from None
