"""Header hygiene between client, gateway and instance (pure).

Hop-by-hop headers (RFC 9110 §7.6.1, plus those a ``Connection`` header names) never cross the gateway.
The client's ``Authorization`` is the platform key: it is never sent on to an instance, and neither is any
``X-Chutes-Signature`` a client made up. The instance gets the gateway's signature, the invocation id and
``X-Forwarded-*``; the client gets the instance's answer headers plus ``X-Chutes-Invocation-Id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chutes.signing import SIGNATURE_HEADER

INVOCATION_ID_HEADER = "X-Chutes-Invocation-Id"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Request headers the gateway sets itself or must not pass on.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "authorization",
    "content-length",
    "expect",
    "x-api-key",
    SIGNATURE_HEADER.lower(),
    INVOCATION_ID_HEADER.lower(),
    "x-forwarded-host",
    "x-forwarded-proto",
}
# Answer headers the gateway's own server writes.
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "date", "server", INVOCATION_ID_HEADER.lower()}


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def upstream_request_headers(
    client_headers: Iterable[tuple[str, str]],
    *,
    client_ip: str | None,
    host: str,
    scheme: str,
    invocation_id: str,
    signature: str,
) -> dict[str, str]:
    """The headers to send an instance, from the client's (a multi-dict's items) and the gateway's own."""
    items = list(client_headers)
    drop = _REQUEST_DROP | _connection_tokens(items)
    out: dict[str, str] = {}
    forwarded_for: list[str] = []
    for name, value in items:
        lower = name.lower()
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
        elif lower not in drop:
            out[name] = f"{out[name]}, {value}" if name in out else value
    if client_ip:
        forwarded_for.append(client_ip)
    if forwarded_for:
        out["X-Forwarded-For"] = ", ".join(forwarded_for)
    if host:
        out["X-Forwarded-Host"] = host
    out["X-Forwarded-Proto"] = scheme
    out[INVOCATION_ID_HEADER] = invocation_id
    out[SIGNATURE_HEADER] = signature
    return out


def client_response_headers(upstream_headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instance's answer headers that go back to the client (a list: ``Set-Cookie`` may repeat)."""
    items = list(upstream_headers.items()) if isinstance(upstream_headers, Mapping) else list(upstream_headers)
    drop = _RESPONSE_DROP | _connection_tokens(items)
    return [(name, value) for name, value in items if name.lower() not in drop]
