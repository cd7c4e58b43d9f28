"""Header hygiene (pure): what crosses the gateway in each direction, as the bytes written."""

from __future__ import annotations

from chutes.gateway.headers import client_response_head, upstream_request


def _fields(lines: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        pairs.append((name, value))
    return pairs


def test_request_headers_drop_credentials_and_hop_by_hop() -> None:
    raw = upstream_request(
        b"POST /run HTTP/1.1\r\nhost: 10.0.0.9:8000\r\n",
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
        client_ip=b"192.0.2.7",
        host=b"alice-x.chutes.test",
        scheme=b"https",
        invocation_id=b"inv1",
        signature=b"t=2,v1=real",
        body=b"abc",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"abc"
    request_line, *lines = head.split(b"\r\n")
    assert request_line == b"POST /run HTTP/1.1"
    out = _fields(b"\r\n".join(lines))
    names = [name for name, _ in out]
    dropped = (b"authorization", b"connection", b"x-private", b"keep-alive", b"transfer-encoding")
    for gone in dropped:
        assert gone not in names
    assert names.count(b"host") == 1 and dict(out)[b"host"] == b"10.0.0.9:8000"  # the instance's, not the client's
    assert names.count(b"content-length") == 1 and dict(out)[b"content-length"] == b"3"  # the body's own
    got = dict(out)
    assert names.count(b"x-chutes-signature") == 1 and got[b"x-chutes-signature"] == b"t=2,v1=real"
    assert got[b"x-forwarded-for"] == b"10.0.0.1, 192.0.2.7"
    assert got[b"x-forwarded-host"] == b"alice-x.chutes.test"
    assert got[b"x-forwarded-proto"] == b"https"
    assert got[b"x-chutes-invocation-id"] == b"inv1"
    assert got[b"content-type"] == b"application/json"
    assert got[b"accept"] == b"text/event-stream"
    assert [v for n, v in out if n == b"x-custom"] == [b"a", b"b"]


def test_request_without_client_address_or_host() -> None:
    raw = upstream_request(
        b"GET /x HTTP/1.1\r\nhost: i:1\r\n", [(b"accept", b"*/*")], client_ip=None, host=b"", scheme=b"http",
        invocation_id=b"i", signature=b"s", body=b"",
    )  # fmt: skip
    assert raw == (
        b"GET /x HTTP/1.1\r\nhost: i:1\r\naccept: */*\r\nx-forwarded-proto: http\r\n"
        b"x-chutes-invocation-id: i\r\nx-chutes-signature: s\r\ncontent-length: 0\r\n\r\n"
    )


def test_response_headers_keep_repeats_and_drop_framing() -> None:
    lines = client_response_head(
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
        ],
        b"inv7",
    )
    assert lines == (
        b"content-type: text/event-stream\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncache-control: no-cache\r\n"
        b"x-chutes-invocation-id: inv7\r\n"
    )
