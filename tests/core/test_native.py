"""The C forms of the gateway's per-call work (core/_hmac.c, gateway/_records.c, gateway/_headers.c; core/_unique.c
in test_unique.py) give the same bytes as the pure-Python forms, whatever the input; and the install builds them
(set CHUTES_PURE_PYTHON=1 where it cannot: no compiler or no OpenSSL headers, and the gateway runs on the Python
forms)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes.core import signing
from chutes.gateway import headers, metering
from chutes.gateway.cli import missing_accelerators

pure_only = os.environ.get("CHUTES_PURE_PYTHON") == "1"
needs_native = pytest.mark.skipif(pure_only, reason="CHUTES_PURE_PYTHON=1: the C forms are not built here")


@needs_native
def test_the_install_built_every_c_form() -> None:
    assert missing_accelerators() == [], "install gcc and libssl-dev and reinstall (or set CHUTES_PURE_PYTHON=1)"
    assert signing.Signer("s").native


def test_the_gateway_names_the_c_forms_it_runs_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(headers, "NATIVE", False)
    monkeypatch.setattr(signing, "NATIVE", False)
    assert set(missing_accelerators()) >= {"gateway/_headers.c", "core/_hmac.c"}


def _reference_header(secret: bytes, method_path: bytes, body: bytes, timestamp: int, nonce: bytes) -> bytes:
    message = b"%d\n%b%b%b" % (timestamp, nonce, method_path, hashlib.sha256(body).hexdigest().encode())
    return b"t=%d,n=%b,v1=%b" % (timestamp, nonce, hmac.new(secret, message, hashlib.sha256).hexdigest().encode())


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(min_size=1, max_size=200),  # keys over SHA-256's 64-byte block are hashed first
    method_path=st.binary(max_size=300),
    body=st.binary(max_size=5000),
    timestamp=st.integers(min_value=0, max_value=2**40),
    nonce=st.binary(min_size=4, max_size=32).map(lambda b: b.hex().encode()),
)
def test_the_c_signature_is_the_python_one_and_hmacs(
    secret: str, method_path: bytes, body: bytes, timestamp: int, nonce: bytes
) -> None:
    signer = signing.Signer(secret)
    assert signer._native is not None
    native = signer._native.header(method_path, body, nonce, timestamp)
    assert native == signer.header_at(method_path, body, timestamp, nonce)
    assert native == _reference_header(secret.encode(), method_path, body, timestamp, nonce)


@needs_native
def test_the_c_signature_of_a_large_body_and_of_now_verifies() -> None:
    signer = signing.Signer("invoke-secret")
    body = os.urandom(3 * 1024 * 1024)  # hashed without the GIL
    header = signer.header(b"\nPOST\n/run?x=1\n", body).decode()
    assert signing.verify("invoke-secret", header, "POST", "/run?x=1", body).nonce is not None


@needs_native
def test_the_c_signer_refuses_wrong_arguments_with_type_errors() -> None:
    native = signing.Signer("s")._native
    assert native is not None
    with pytest.raises(TypeError):
        native.header("not bytes", b"", b"ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.header(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="nonce"):
        native.header(b"", b"", b"a" * 200)


_records = st.tuples(
    st.one_of(st.text(max_size=40), st.binary(min_size=16, max_size=16).map(bytes.hex)),  # any id; the gateway's
    st.text(max_size=30),
    st.integers(min_value=100, max_value=599),
    st.integers(min_value=-(2**70), max_value=2**70),  # negatives become 0; past 64 bits Python writes it
    st.integers(min_value=0, max_value=2**66),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=-(2**62), max_value=2**62),
)


@needs_native
@settings(max_examples=500, deadline=None)
@given(record=_records)
def test_the_c_record_line_is_the_python_one(record: tuple[str, str, int, int, int, int, int]) -> None:
    invocation_id, name, status, duration_us, bytes_in, bytes_out, started_us = record
    middle = f',"chute_id":{json.dumps(name)},"caller":"u","cord":"run","status":'.encode()
    expected = metering.format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us)
    assert metering._format_record is not None
    native = metering._format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us)
    assert native in (None, expected)
    if invocation_id.isascii() and invocation_id.isalnum() and max(abs(duration_us), bytes_in) < 2**63:
        assert native == expected  # the gateway's own ids and real numbers take the C path
    line = metering.encode_record(invocation_id, name, "u", "run", status, duration_us, bytes_in, bytes_out,
                                  started_us)  # fmt: skip
    assert json.loads(line)["invocation_id"] == invocation_id


_names = st.one_of(
    st.sampled_from([b"host", b"authorization", b"content-type", b"content-length", b"connection", b"keep-alive",
                     b"x-forwarded-for", b"x-forwarded-host", b"x-chutes-signature", b"x-chutes-invocation-id",
                     b"Set-Cookie", b"Date", b"Server", b"TRANSFER-ENCODING", b"x-custom", b"te", b"upgrade"]),
    st.binary(min_size=1, max_size=80).filter(lambda b: b":" not in b),
)  # fmt: skip
_pairs = st.lists(st.tuples(_names, st.binary(max_size=60)), max_size=12)


@needs_native
@settings(max_examples=500, deadline=None)
@given(
    pairs=_pairs,
    client_ip=st.one_of(st.none(), st.just(b""), st.just(b"10.0.0.7")),
    host=st.sampled_from([b"", b"bench.chutes.local:8000"]),
    body=st.binary(max_size=200),
)
def test_the_c_request_to_an_instance_is_the_python_one(
    pairs: list[tuple[bytes, bytes]], client_ip: bytes | None, host: bytes, body: bytes
) -> None:
    lowered = [(name.lower(), value) for name, value in pairs]  # as the server hands them over
    arguments: dict[str, Any] = {"client_ip": client_ip, "host": host, "scheme": b"http", "invocation_id": b"ab" * 16,
                                 "signature": b"t=1,n=2,v1=3", "body": body}  # fmt: skip
    line = b"POST /run HTTP/1.1\r\nhost: i:1\r\n"
    native = headers.upstream_request(line, lowered, **arguments)
    with mock.patch.object(headers, "_native", None):  # the Python form
        assert native == headers.upstream_request(line, lowered, **arguments)


@needs_native
@settings(max_examples=500, deadline=None)
@given(pairs=_pairs)
def test_the_c_answer_head_is_the_python_one(pairs: list[tuple[bytes, bytes]]) -> None:
    native = headers.client_response_head(pairs, b"cd" * 16)
    with mock.patch.object(headers, "_native", None):  # the Python form
        assert native == headers.client_response_head(pairs, b"cd" * 16)


@needs_native
def test_the_c_header_forms_take_the_common_case_and_leave_the_rare_ones_to_python() -> None:
    native = headers._native
    assert native is not None
    common = [(b"content-type", b"application/json"), (b"authorization", b"Bearer k")]
    assert native.upstream_request(b"L\r\n", common, headers._REQUEST_DROP, b"1.2.3.4", b"h", b"http", b"i", b"s",
                                   b"{}") is not None  # fmt: skip
    for rare in ((b"x-forwarded-for", b"9.9.9.9"), (b"connection", b"x-custom")):
        assert native.upstream_request(b"L\r\n", [*common, rare], headers._REQUEST_DROP, None, b"", b"http", b"i",
                                       b"s", b"") is None  # fmt: skip
    assert native.client_response_head([(b"Connection", b"close")], headers._RESPONSE_DROP, b"i") is None
    assert native.client_response_head([(b"x", "not bytes")], headers._RESPONSE_DROP, b"i") is None  # type: ignore[list-item]
    with pytest.raises(TypeError):
        native.client_response_head([], headers._RESPONSE_DROP, "not bytes")  # type: ignore[arg-type]
