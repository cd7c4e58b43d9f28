import pytest

from chutes.core import signing


def test_round_trip_and_tamper_detection() -> None:
    header = signing.sign("s3cret", "POST", "/echo", b'{"a":1}', timestamp=1_000_000)
    parsed = signing.verify("s3cret", header, "POST", "/echo", b'{"a":1}', now=1_000_010)
    assert parsed.timestamp == 1_000_000
    for secret, method, path, body in [
        ("other", "POST", "/echo", b'{"a":1}'),
        ("s3cret", "GET", "/echo", b'{"a":1}'),
        ("s3cret", "POST", "/echo2", b'{"a":1}'),
        ("s3cret", "POST", "/echo", b'{"a":2}'),
    ]:
        with pytest.raises(signing.SignatureError) as err:
            signing.verify(secret, header, method, path, body, now=1_000_010)
        assert err.value.status == 403


def test_missing_is_401_and_stale_is_403() -> None:
    with pytest.raises(signing.SignatureError) as missing:
        signing.verify("s", None, "POST", "/x", b"")
    assert missing.value.status == 401
    header = signing.sign("s", "POST", "/x", b"", timestamp=1000)
    with pytest.raises(signing.SignatureError, match="stale") as stale:
        signing.verify("s", header, "POST", "/x", b"", now=1061)
    assert stale.value.status == 403


@pytest.mark.parametrize("header", ["garbage", "t=abc,v1=00", "t=1,v1=zz", "t=1,t=2,v1=" + "0" * 64, "v1=" + "0" * 64])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(signing.SignatureError) as err:
        signing.parse(header)
    assert err.value.status == 403


def test_identical_requests_get_distinct_signatures_that_both_verify() -> None:
    first = signing.sign("s", "POST", "/noop", b"", timestamp=5000)
    second = signing.sign("s", "POST", "/noop", b"", timestamp=5000)
    assert first != second
    assert (
        signing.verify("s", first, "POST", "/noop", b"", now=5000).digest
        != signing.verify("s", second, "POST", "/noop", b"", now=5000).digest
    )


def test_the_nonce_is_covered_by_the_mac() -> None:
    header = signing.sign("s", "POST", "/x", b"", timestamp=5000, nonce="aa" * 8)
    forged = header.replace("n=" + "aa" * 8, "n=" + "bb" * 8)
    with pytest.raises(signing.SignatureError, match="wrong"):
        signing.verify("s", forged, "POST", "/x", b"", now=5000)


def test_design_md_form_without_nonce_still_verifies() -> None:
    import hashlib
    import hmac

    message = f"5000\nPOST\n/x\n{hashlib.sha256(b'').hexdigest()}".encode()
    header = f"t=5000,v1={hmac.new(b's', message, hashlib.sha256).hexdigest()}"
    assert signing.verify("s", header, "POST", "/x", b"", now=5000).nonce is None
