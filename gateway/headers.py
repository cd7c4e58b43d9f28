"""Header hygiene between client, gateway and instance (pure; headers as ASGI gives them: byte pairs).

Hop-by-hop headers (RFC 9110 §7.6.1, plus those a ``Connection`` header names) never cross the gateway.
The client's ``Authorization`` is the platform key: it is never sent on to an instance, and neither is any
``X-Chutes-Signature`` a client made up. The instance gets the gateway's signature, the invocation id and
``X-Forwarded-*``; the client gets the instance's answer headers plus ``X-Chutes-Invocation-Id``.
"""

from __future__ import annotations

from collections.abc import Iterable

from chutes.core.signing import SIGNATURE_HEADER

try:  # the common case of both functions in C (gateway/_headers.c), built by the install where a compiler is
    from chutes.gateway import _headers as _native
except ImportError:  # not built: the Python forms below serve, with the same bytes
    _native = None  # type: ignore[assignment]
NATIVE = _native is not None  # whether the common cases run in C here

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
# What the gateway adds to every request it sends an instance, after the client's headers: scheme, invocation
# id, signature, body length (the end of the head).
_GATEWAY_REQUEST_HEADERS = (
    b"x-forwarded-proto: %b\r\n" + _INVOCATION_ID + b": %b\r\n" + _SIGNATURE + b": %b\r\ncontent-length: %d\r\n\r\n"
)
_INVOCATION_ID_LINE = _INVOCATION_ID + b": "
# Answer headers the gateway writes itself (framing, its own identity) or must not pass on.
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"date", b"server", _INVOCATION_ID}


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def upstream_request(
    request_line: bytes,
    client_headers: Iterable[tuple[bytes, bytes]],
    *,
    client_ip: bytes | None,
    host: bytes,
    scheme: bytes,
    invocation_id: bytes,
    signature: bytes,
    body: bytes,
) -> bytes:
    """The whole request to send an instance, in one pass over the client's headers (names lower-case, values
    checked by the server that received them: no CR or LF): ``request_line`` (method, target and the
    instance's ``host`` header, kept by the proxy per cord and instance), the client's headers that may pass,
    the gateway's (``X-Forwarded-*``, the invocation id, the signature), the length and the body."""
    if _native is not None:  # it answers None for anything but a list of byte pairs
        built = _native.upstream_request(
            request_line, client_headers, _REQUEST_DROP, client_ip, host, scheme, invocation_id, signature, body
        )
        if built is not None:  # None: an X-Forwarded-For to extend or a Connection header, done in Python
            return built
    parts = [request_line]
    forwarded: bytes | None = None
    named: set[bytes] | None = None
    for name, value in client_headers:
        if name not in _REQUEST_DROP:
            parts += (name, b": ", value, b"\r\n")
        elif name == b"x-forwarded-for":
            forwarded = value if forwarded is None else forwarded + b", " + value
        elif name == b"connection":
            named = _connection_tokens(value) | (named or set())
    if named:  # rare: headers the client's Connection header names are hop-by-hop too
        parts = [request_line]
        for name, value in client_headers:
            if name not in _REQUEST_DROP and name not in named:
                parts += (name, b": ", value, b"\r\n")
    if client_ip:
        forwarded = client_ip if forwarded is None else forwarded + b", " + client_ip
    if forwarded is not None:
        parts += (b"x-forwarded-for: ", forwarded, b"\r\n")
    if host:
        parts += (b"x-forwarded-host: ", host, b"\r\n")
    parts += (_GATEWAY_REQUEST_HEADERS % (scheme, invocation_id, signature, len(body)), body)
    return b"".join(parts)


def client_response_head(upstream_headers: Iterable[tuple[bytes, bytes]], invocation_id: bytes) -> bytes:
    """The header lines (each ending in CRLF) of the answer to the client: the instance's that may pass, names
    lower-case, repeats such as ``Set-Cookie`` kept, then ``X-Chutes-Invocation-Id``."""
    if _native is not None:
        head = _native.client_response_head(upstream_headers, _RESPONSE_DROP, invocation_id)
        if head is not None:  # None: a Connection header, done in Python
            return head
    parts: list[bytes] = []
    named: set[bytes] | None = None
    for name, value in upstream_headers:
        lower = name.lower()
        if lower not in _RESPONSE_DROP:
            parts += (lower, b": ", value, b"\r\n")
        elif lower == b"connection":
            named = _connection_tokens(value) | (named or set())
    if named:
        parts = []
        for name, value in upstream_headers:
            lower = name.lower()
            if lower not in _RESPONSE_DROP and lower not in named:
                parts += (lower, b": ", value, b"\r\n")
    parts += (_INVOCATION_ID_LINE, invocation_id, b"\r\n")
    return b"".join(parts)
