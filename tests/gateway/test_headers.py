"""Header hygiene (pure)."""

from __future__ import annotations

from chutes.gateway.headers import client_response_headers, upstream_request_headers


def test_request_headers_drop_credentials_and_hop_by_hop() -> None:
    out = upstream_request_headers(
        [
            (b"host", b"gw"),
            (b"authorization", b"Bearer cnk_secret"),
            (b"x-chutes-signature", b"t=1,v1=forged"),
            (b"connection", b"keep-alive, X-Private"),
            (b"x-private", b"1"),
            (b"keep-alive", b"300"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"3"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
            (b"x-custom", b"a"),
            (b"x-custom", b"b"),
        ],
        client_ip="192.0.2.7",
        host=b"alice-x.chutes.test",
        scheme="https",
        invocation_id="inv1",
        signature="t=2,v1=real",
    )
    names = [name for name, _ in out]
    dropped = (b"host", b"authorization", b"connection", b"x-private", b"keep-alive", b"transfer-encoding")
    for gone in (*dropped, b"content-length"):
        assert gone not in names
    got = dict(out)
    assert names.count(b"x-chutes-signature") == 1 and got[b"x-chutes-signature"] == b"t=2,v1=real"
    assert got[b"x-forwarded-for"] == b"10.0.0.1, 192.0.2.7"
    assert got[b"x-forwarded-host"] == b"alice-x.chutes.test"
    assert got[b"x-forwarded-proto"] == b"https"
    assert got[b"x-chutes-invocation-id"] == b"inv1"
    assert got[b"content-type"] == b"application/json"
    assert got[b"accept"] == b"text/event-stream"
    assert [v for n, v in out if n == b"x-custom"] == [b"a", b"b"]


def test_response_headers_keep_repeats_and_drop_framing() -> None:
    out = client_response_headers(
        [
            (b"Content-Type", b"text/event-stream"),
            (b"Content-Length", b"10"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Server", b"uvicorn"),
            (b"X-Chutes-Invocation-Id", b"spoofed"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Cache-Control", b"no-cache"),
        ]
    )
    assert out == [
        (b"content-type", b"text/event-stream"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"cache-control", b"no-cache"),
    ]
