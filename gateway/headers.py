"""Header hygiene between client, gateway and instance (pure; headers as ASGI gives them: byte pairs).

Hop-by-hop headers (RFC 9110 §7.6.1, plus those a ``Connection`` header names) never cross the gateway.
The client's ``Authorization`` is the platform key: it is never sent on to an instance, and neither is any
``X-Chutes-Signature`` a client made up. The instance gets the gateway's signature, the invocation id and
``X-Forwarded-*``; the client gets the instance's answer headers plus ``X-Chutes-Invocation-Id``.
"""

from __future__ import annotations

from collections.abc import Iterable

from chutes.core.signing import SIGNATURE_HEADER

INVOCATION_ID_HEADER = "X-Chutes-Invocation-Id"
_INVOCATION_ID = INVOCATION_ID_HEADER.lower().encode()
_SIGNATURE = SIGNATURE_HEADER.lower().encode()

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request headers the gateway sets itself or must not pass on.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"content-length",
    b"expect",
    b"x-api-key",
    _SIGNATURE,
    _INVOCATION_ID,
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
}
# Answer headers the gateway writes itself (framing, its own identity) or must not pass on.
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"date", b"server", _INVOCATION_ID}


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def upstream_request_headers(
    client_headers: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: str | None,
    host: bytes,
    scheme: str,
    invocation_id: str,
    signature: str,
) -> Headers:
    """The headers to send an instance: the client's (names lower-case, as ASGI gives them) and the gateway's."""
    out: Headers = []
    forwarded_for: list[bytes] = []
    named: set[bytes] = set()
    for name, value in client_headers:
        if name not in _REQUEST_DROP:
            out.append((name, value))
        elif name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"connection":
            named |= _connection_tokens(value)
    if named:
        out = [(n, v) for n, v in out if n not in named]
    if client_ip:
        forwarded_for.append(client_ip.encode())
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", scheme.encode()))
    out.append((_INVOCATION_ID, invocation_id.encode()))
    out.append((_SIGNATURE, signature.encode()))
    return out


def client_response_headers(upstream_headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The instance's answer headers that go back to the client (repeats such as ``Set-Cookie`` kept)."""
    out: Headers = []
    named: set[bytes] = set()
    for name, value in upstream_headers:
        lower = name.lower()
        if lower not in _RESPONSE_DROP:
            out.append((lower, value))
        elif lower == b"connection":
            named |= _connection_tokens(value)
    if named:
        out = [(n, v) for n, v in out if n not in named]
    return out
