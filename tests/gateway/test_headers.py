"""Header hygiene (pure)."""

from __future__ import annotations

from chutes.gateway.headers import client_response_headers, upstream_request_headers


def test_request_headers_drop_credentials_and_hop_by_hop() -> None:
    out = upstream_request_headers(
        [
            ("Host", "gw"),
            ("Authorization", "Bearer cnk_secret"),
            ("X-Chutes-Signature", "t=1,v1=forged"),
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "1"),
            ("Keep-Alive", "300"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "3"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
        ],
        client_ip="192.0.2.7",
        host="alice-x.chutes.test",
        scheme="https",
        invocation_id="inv1",
        signature="t=2,v1=real",
    )
    lowered = {k.lower(): v for k, v in out.items()}
    dropped = ("host", "authorization", "connection", "x-private", "keep-alive", "transfer-encoding", "content-length")
    for gone in dropped:
        assert gone not in lowered
    assert lowered["x-chutes-signature"] == "t=2,v1=real"
    assert lowered["x-forwarded-for"] == "10.0.0.1, 192.0.2.7"
    assert lowered["x-forwarded-host"] == "alice-x.chutes.test"
    assert lowered["x-forwarded-proto"] == "https"
    assert lowered["x-chutes-invocation-id"] == "inv1"
    assert lowered["content-type"] == "application/json"
    assert lowered["accept"] == "text/event-stream"
    assert lowered["x-custom"] == "a, b"


def test_response_headers_keep_repeats_and_drop_framing() -> None:
    out = client_response_headers(
        [
            ("Content-Type", "text/event-stream"),
            ("Content-Length", "10"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Server", "uvicorn"),
            ("X-Chutes-Invocation-Id", "spoofed"),
            ("Cache-Control", "no-cache"),
        ]
    )
    assert out == [
        ("Content-Type", "text/event-stream"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Cache-Control", "no-cache"),
    ]
